//! The FROM-scratch image recipes against a real dockerd in a per-run namespace.

mod common;

use std::path::Path;
use std::time::Duration;

use calico_lab::dockerd::{Dockerd, DockerdConfig, build_busybox_image, build_scratch_image};
use common::*;

#[test]
fn scratch_images_run() {
    let ns = Netns::new("cdi");
    let name = ns.name.clone();
    in_netns(&ns.name.clone(), move || async move {
        let dir = tempfile::tempdir().unwrap();
        let dockerd = Dockerd::start(DockerdConfig {
            netns: name,
            state_dir: dir.path().join("docker"),
            plugins_dir: dir.path().join("plugins"),
            start_timeout: Duration::from_secs(30),
            cgroup_parent: None,
        })
        .await
        .expect("dockerd");
        let sock = dockerd.socket();

        build_busybox_image(&dockerd, "busybox:latest").unwrap();
        let out = docker_ok(
            &sock,
            &[
                "run",
                "--rm",
                "--net",
                "none",
                "busybox",
                "sh",
                "-c",
                "ls /bin | wc -l; ip -o link",
            ],
        )
        .await;
        let applets: usize = out.lines().next().unwrap().trim().parse().unwrap();
        assert!(applets > 100, "only {applets} applets");
        assert!(out.contains("lo:"), "{out}");
        let layers = docker_ok(&sock, &["history", "-q", "busybox"]).await;
        assert_eq!(
            layers.lines().count(),
            1,
            "FROM scratch: one imported layer, got {layers}"
        );

        // A dynamically linked program with its libraries (what calico-node's image holds).
        build_scratch_image(
            &dockerd,
            "calico-rs/iptool:test",
            &[Path::new("/usr/bin/ip")],
        )
        .unwrap();
        let out = docker_ok(
            &sock,
            &[
                "run",
                "--rm",
                "--net",
                "none",
                "calico-rs/iptool:test",
                "-o",
                "link",
            ],
        )
        .await;
        assert!(out.contains("lo:"), "{out}");
        let out = docker_ok(
            &sock,
            &[
                "image",
                "inspect",
                "-f",
                "{{json .Config.Entrypoint}}",
                "calico-rs/iptool:test",
            ],
        )
        .await;
        assert_eq!(out.trim(), r#"["/bin/ip"]"#);
        drop(dockerd);
    });
}
