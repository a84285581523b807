# Shared by the scripts (source it; not run on its own).

# need_root WHY "$@": continue when root; otherwise run this script again through sudo when sudo
# is installed (keeping PATH and the Rust toolchain's location, which sudo would reset), else
# stop with a clear message. Call it before the script changes directory.
need_root() {
  local why=$1; shift
  ((EUID == 0)) && return 0
  local me; me=$(basename "$0")
  if command -v sudo >/dev/null 2>&1; then
    echo "$me: needs root ($why); running it again with sudo" >&2
    exec sudo env PATH="$PATH" \
      CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" \
      ${CI:+CI="$CI"} ${RUSTC_WRAPPER:+RUSTC_WRAPPER="$RUSTC_WRAPPER"} \
      ${CARGO_TARGET_DIR:+CARGO_TARGET_DIR="$CARGO_TARGET_DIR"} \
      "$0" "$@"
  fi
  echo "$me: needs root ($why) and sudo is not installed: run it from a root shell" >&2
  exit 1
}

# step DESCRIPTION COMMAND...: says what runs (DESCRIPTION should say roughly how long it
# takes), runs it with its own progress output, then says how long it took.
step() {
  local what=$1; shift
  local start=$SECONDS
  printf '%s: %s\n' "$(basename "$0")" "$what"
  "$@"
  printf '%s: done in %ds\n' "$(basename "$0")" $((SECONDS - start))
}
