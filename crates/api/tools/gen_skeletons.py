#!/usr/bin/env python3
"""One-shot skeleton generator: reads the reference CRD schemas (structure only, never the
description text) and prints Rust struct/enum skeletons. Its output was committed once as
ordinary source under src/kinds/ and is maintained by hand from then on; this script is kept
to show where the skeletons came from. Usage: gen_skeletons.py REF_DIR OUT_DIR"""
import glob, json, os, re, sys, yaml

REF, OUT = sys.argv[1], sys.argv[2]

# Module per CRD file; order matters: shared types land in the first module that defines them.
FILES = [
    ("networkpolicies", "networkpolicy", "NetworkPolicy"),
    ("globalnetworkpolicies", "globalnetworkpolicy", "GlobalNetworkPolicy"),
    ("stagednetworkpolicies", "stagednetworkpolicy", "StagedNetworkPolicy"),
    ("stagedglobalnetworkpolicies", "stagedglobalnetworkpolicy", "StagedGlobalNetworkPolicy"),
    ("stagedkubernetesnetworkpolicies", "stagedkubernetesnetworkpolicy", "StagedKubernetesNetworkPolicy"),
    ("tiers", "tier", "Tier"),
    ("ippools", "ippool", "IPPool"),
    ("ipreservations", "ipreservation", "IPReservation"),
    ("ipamconfigurations", "ipamconfiguration", "IPAMConfiguration"),
    ("bgpconfigurations", "bgpconfiguration", "BGPConfiguration"),
    ("bgppeers", "bgppeer", "BGPPeer"),
    ("bgpfilters", "bgpfilter", "BGPFilter"),
    ("hostendpoints", "hostendpoint", "HostEndpoint"),
    ("networksets", "networkset", "NetworkSet"),
    ("globalnetworksets", "globalnetworkset", "GlobalNetworkSet"),
    ("felixconfigurations", "felixconfiguration", "FelixConfiguration"),
    ("kubecontrollersconfigurations", "kubecontrollersconfiguration", "KubeControllersConfiguration"),
    ("clusterinformations", "clusterinformation", "ClusterInformation"),
    ("caliconodestatuses", "caliconodestatus", "CalicoNodeStatus"),
    ("ipamblocks", "ipamblock", "IPAMBlock"),
    ("ipamhandles", "ipamhandle", "IPAMHandle"),
    ("blockaffinities", "blockaffinity", "BlockAffinity"),
]

BAD_NAMES = {"A", "If", "Optional", "Selects", "Deprecated", "The", "This", "PrefixLength",
             "Source", "Destination", "Metadata", "NotICMP", "ICMP", "HTTP", "Node", "Policy",
             "Namespace", "HostEndpoint", "WorkloadEndpoint", "ServiceAccount", "LoadBalancer",
             "Migration", "Controllers", "ipBlock", "namespaceSelector", "podSelector", "BGP",
             "Agent", "Routes", "BIRDV4", "BIRDV6", "LearnedFrom", "RunningConfig", "Services",
             "ServiceAccounts"}
# Explicit names for nested objects, by json path within the CRD (first match wins).
NAMES = {
    ".spec.egress[]": "Rule", ".spec.ingress[]": "Rule",
    ".spec.egress[].destination": "EntityRule", ".spec.egress[].source": "EntityRule",
    ".spec.ingress[].destination": "EntityRule", ".spec.ingress[].source": "EntityRule",
    "entity.serviceAccounts": "ServiceAccountMatch", "entity.services": "ServiceMatch",
    "rule.http": "HTTPMatch", "rule.icmp": "ICMPFields", "rule.notICMP": "ICMPFields",
    "rule.metadata": "RuleMetadata",
    "bgpconfigurations:.spec.nodeMeshPassword": "BGPPassword", "bgppeers:.spec.password": "BGPPassword",
    "secretKeyRef": "SecretKeySelector",
    "kcc.controllers": "ControllersConfig",
    "hostendpoints:.spec.ports[]": "EndpointPort",
    "felixconfigurations:.spec.routeTableRange": "RouteTableRange",
    "felixconfigurations:.spec.routeTableRanges[]": "RouteTableIDRange",
    "felixconfigurations:.spec.healthTimeoutOverrides[]": "HealthTimeoutOverride",
    "caliconodestatuses:.status.agent": "CalicoNodeAgent",
    "caliconodestatuses:.status.bgp": "CalicoNodeBGPStatus",
    "caliconodestatuses:.status.routes": "CalicoNodeBGPRouteStatus",
    "caliconodestatuses:.status.agent.birdV4": "BGPDaemonStatus",
    "caliconodestatuses:.status.agent.birdV6": "BGPDaemonStatus",
    "learnedFrom": "CalicoNodeRouteLearnedFrom",
    "kubecontrollersconfigurations:.status.runningConfig": "KubeControllersConfigurationSpec",
    "kcc.node": "NodeControllerConfig", "kcc.policy": "PolicyControllerConfig",
    "kcc.workloadEndpoint": "WorkloadEndpointControllerConfig",
    "kcc.serviceAccount": "ServiceAccountControllerConfig", "kcc.namespace": "NamespaceControllerConfig",
    "kcc.loadBalancer": "LoadBalancerControllerConfig", "kcc.migration": "MigrationControllerConfig",
    "kcc.hostEndpoint": "AutoHostEndpointConfig", "kcc.templates[]": "AutoHostEndpointTemplate",
    "knp.ipBlock": "IPBlock", "knp.podSelector": "LabelSelector", "knp.namespaceSelector": "LabelSelector",
    "knp.matchExpressions[]": "LabelSelectorRequirement",
    "stagedkubernetesnetworkpolicies:.spec.egress[]": "NetworkPolicyEgressRule",
    "stagedkubernetesnetworkpolicies:.spec.ingress[]": "NetworkPolicyIngressRule",
    "bgpf.communities": "BGPFilterCommunityMatch",
    "bgpf.prefixLength": "BGPFilterPrefixLength",
    "ippools:.status": "IPPoolStatus",
}
ENUM_NAMES = {
    "action": "Action", "ipipMode": "IPIPMode", "vxlanMode": "VXLANMode",
    "types": "PolicyType", "allowedUses": "IPPoolAllowedUse", "assignmentMode": "AssignmentMode",
    "stagedAction": "StagedAction", "defaultAction": "TierDefaultAction",
    "matchOperator": "BGPFilterMatchOperator", "source": "BGPFilterMatchSource",
    "interface": None, "state": None, "status": None, "type": None, "reversePeering": "ReversePeering",
    "policyTypes": "KubePolicyType", "peerType": "BGPFilterPeerType", "performanceHints": "PolicyPerformanceHint", "matchOperatorPL": None,
}
RUST_KEYWORDS = {"type", "match", "ref", "self", "use", "mod", "where", "loop", "move", "in",
                 "as", "static", "fn", "impl", "trait", "struct", "enum", "let", "const", "crate",
                 "super", "dyn", "async", "await", "box", "override", "final", "priority"} - {"priority"}

def snake(s):
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", s)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    return s.lower()

def camel_up(s):
    return s[:1].upper() + s[1:]

def variant(v):
    if v == "":
        return "Unset"
    v2 = re.sub(r"[^A-Za-z0-9]", "", v)
    v2 = camel_up(v2)
    if v2[:1].isdigit():
        v2 = "V" + v2
    return v2

def enum_values(o):
    if "enum" in o:
        return list(o["enum"])
    if "allOf" in o:
        sets = [x["enum"] for x in o["allOf"] if "enum" in x]
        vals = [v for v in sets[-1] if all(v in s for s in sets)]
        return vals
    return None

def exts(o):
    e = {k: v for k, v in o.items() if k.startswith("x-kubernetes") and k != "x-kubernetes-validations" and k != "x-kubernetes-int-or-string"}
    if "default" in o:
        e["default"] = o["default"]
    return e

enum_sigs = {}
types = {}       # name -> dict(kind, sig, module, body)
sig_names = {}   # sig -> name
order = []

def struct_name(crd, path, field, parent, o):
    for key in (crd + ":" + path, path, field):
        if key in NAMES:
            return NAMES[key]
    ctx = ctx_prefix(crd, path)
    if ctx and ctx + "." + field in NAMES:
        return NAMES[ctx + "." + field]
    d = (o.get("description") or "").split()
    if d and re.fullmatch(r"[A-Z][A-Za-z0-9]+", d[0]) and d[0] not in BAD_NAMES:
        return d[0]
    return parent + camel_up(field.rstrip("[]"))

def ctx_prefix(crd, path):
    if crd.endswith("networkpolicies") and crd != "stagedkubernetesnetworkpolicies":
        if path.endswith("destination." + path.split(".")[-1]) or path.endswith("source." + path.split(".")[-1]):
            return "entity"
        return "rule"
    if crd == "kubecontrollersconfigurations":
        return "kcc"
    if crd == "stagedkubernetesnetworkpolicies":
        return "knp"
    if crd == "bgpfilters":
        return "bgpf"
    return None

def rust_type(crd, module, o, path, field, parent):
    """Returns the Rust type expression for schema o."""
    if o.get("x-kubernetes-int-or-string"):
        if field in ("protocol", "notProtocol"):
            return "Protocol"
        if field == "port":
            return "IntOrString"
        if field == "istioDSCPMark":
            return "Dscp"
        return "Port"
    t = o.get("type")
    ev = enum_values(o)
    if t == "string" and ev is not None:
        field = field.replace("[]", "")
        sig = json.dumps(["enum", ev])
        if ENUM_NAMES.get(field):
            name = ENUM_NAMES[field]
        elif sig in enum_sigs:
            return enum_sigs[sig]
        else:
            name = parent + camel_up(field)
        enum_sigs.setdefault(sig, name)
        if name in types and types[name]["sig"] != sig:
            name = parent + camel_up(field)
        if name not in types:
            body = "#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]\npub enum %s {\n" % name
            for v in ev:
                body += '    #[serde(rename = "%s")]\n    %s,\n' % (v, variant(v)) if variant(v) != v else "    %s,\n" % v
            body += "}\n"
            types[name] = dict(sig=sig, module=module, body=body)
            order.append(name)
        return name
    if t == "string":
        return "String"
    if t == "boolean":
        return "bool"
    if t == "integer":
        return "i32" if o.get("format") == "int32" else "i64"
    if t == "number":
        return "f64"
    if t == "array":
        inner = rust_type(crd, module, o["items"], path + "[]", field + "[]", parent)
        return "Vec<%s>" % inner
    if t == "object" and "properties" in o:
        name = struct_name(crd, path, field, parent, o)
        return emit_struct(crd, module, o, path, name)
    if t == "object" and isinstance(o.get("additionalProperties"), dict):
        inner = rust_type(crd, module, o["additionalProperties"], path + "{}", field, parent)
        return "BTreeMap<String, %s>" % inner
    print("UNHANDLED", crd, path, o, file=sys.stderr)
    return "serde_json::Value"

ROOTS = {}

def emit_struct(crd, module, o, path, name):
    fields = []
    req = set(o.get("required") or [])
    for k, c in o["properties"].items():
        ty = rust_type(crd, module, c, path + "." + k, k, name)
        fields.append((k, ty, k in req, exts(c) if not (c.get("type") == "object" and "properties" in c) else {}))
    sext = exts(o) if True else {}
    sext.pop("default", None)
    sig = json.dumps(["struct", fields, sext])
    base = name
    n = 2
    while name in types and types[name]["sig"] != sig:
        name = "%s%d" % (base, n)
        n += 1
        print("NAME CLASH", crd, path, name, file=sys.stderr)
    if name in types:
        return name
    body = ROOTS.get(name, "")
    body += "#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]\n"
    body += '#[serde(rename_all = "camelCase", deny_unknown_fields)]\n'
    for ek, ev in sext.items():
        body += "#[schemars(extend(%s = %s))]\n" % (json.dumps(ek), json.dumps(ev))
    body += "pub struct %s {\n" % name
    for k, ty, required, fe in fields:
        rn = snake(k)
        attrs = []
        if rn in RUST_KEYWORDS:
            rn = "r#" + rn
        if snake_to_camel(rn.replace("r#", "")) != k:
            attrs.append('rename = "%s"' % k)
        if required:
            full = ty
        elif ty.startswith("Vec<") or ty.startswith("BTreeMap<"):
            attrs.append("default")
            attrs.append('skip_serializing_if = "%s::is_empty"' % ty.split("<")[0])
            full = ty
        else:
            attrs.append('skip_serializing_if = "Option::is_none"')
            full = "Option<%s>" % ty
        if attrs:
            body += "    #[serde(%s)]\n" % ", ".join(attrs)
        for ek, ev in fe.items():
            body += "    #[schemars(extend(%s = %s))]\n" % (json.dumps(ek), json.dumps(ev))
        body += "    pub %s: %s,\n" % (rn, full)
    body += "}\n"
    types[name] = dict(sig=sig, module=module, body=body)
    order.append(name)
    return name

def snake_to_camel(s):
    parts = s.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])

meta = {}
for plural, module, kind in FILES:
    d = yaml.safe_load(open(os.path.join(REF, "projectcalico.org_%s.yaml" % plural)))
    sch = d["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    props = sch["properties"]
    spec = d["spec"]
    v = spec["versions"][0]
    names = spec["names"]
    h = "#[derive(CustomResource)]\n#[kube(\n"
    h += '    group = "projectcalico.org",\n    version = "v3",\n    kind = "%s",\n' % kind
    h += '    plural = "%s",\n    singular = "%s",\n' % (names["plural"], names["singular"])
    for sn in names.get("shortNames", []):
        h += '    shortname = "%s",\n' % sn
    if spec["scope"] == "Namespaced":
        h += "    namespaced,\n"
    if "status" in props:
        h += '    status = "%sStatus",\n' % kind
    for c in v.get("additionalPrinterColumns", []):
        h += '    printcolumn(name = "%s", type_ = "%s", json_path = "%s"' % (c["name"], c["type"], c["jsonPath"].replace('"', '\\"'))
        if "priority" in c:
            h += ', priority = "%s"' % c["priority"]
        h += "),\n"
    h += '    derive = "PartialEq",\n    derive = "Default"\n)]\n'
    ROOTS[kind + "Spec"] = h
    emit_struct(plural, module, props["spec"], ".spec", kind + "Spec")
    if "status" in props:
        NAMES.setdefault(plural + ":.status", kind + "Status")
        emit_struct(plural, module, props["status"], ".status", kind + "Status")

os.makedirs(OUT, exist_ok=True)
for plural, module, kind in FILES:
    names = [n for n in order if types[n]["module"] == module]
    with open(os.path.join(OUT, module + ".rs"), "w") as f:
        f.write("//! `%s` (skeleton generated once by tools/gen_skeletons.py, maintained by hand).\n\n" % kind)
        f.write("#![allow(clippy::upper_case_acronyms)]\n\nuse super::*;\n\n")
        for n in names:
            f.write(types[n]["body"] + "\n")
