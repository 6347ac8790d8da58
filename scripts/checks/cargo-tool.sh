# shellcheck shell=bash
# Sourced by the checks that run a pinned cargo tool (cargo-deny.sh, cargo-machete.sh).
#
#   cargo_tool NAME VERSION ROOT   prints the path of NAME at exactly VERSION: the one in
#                                  ROOT/bin, else one on PATH, else installs it into ROOT
#                                  (cargo install --locked; once per machine or cache)

cargo_tool() {
  local name=$1 version=$2 root=$3
  local bin="$root/bin/$name"
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -Eq "(^| )$version\$"; then
    echo "$bin"
  elif command -v "$name" >/dev/null 2>&1 && "$name" --version 2>/dev/null | grep -Eq "(^| )$version\$"; then
    command -v "$name"
  else
    echo "$name: installing $name $version into $root" >&2
    mkdir -p "$root"
    cargo install --locked --quiet "$name" --version "$version" --root "$root" >&2
    echo "$bin"
  fi
}
