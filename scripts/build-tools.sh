#!/usr/bin/env bash
# Builds the pinned infrastructure binaries (Jaeger, later Dex and oauth2-proxy) from the Go
# modules under tools/. Each tools/<name>/go.mod names one program in a `tool` directive; the
# binary lands in .cache/bin/<name>. A stamp holding the hash of go.mod and go.sum sits next to
# each binary, so a second run only rebuilds what a version bump changed.
set -euo pipefail

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin_dir="$root/.cache/bin"

command -v go >/dev/null 2>&1 ||
  die "go is not installed or not on PATH; install Go 1.24 or newer (https://go.dev/dl/) and rerun"

# Prints the package paths of a module's `tool` directives, in both the one-line form and the
# parenthesised block form.
tool_packages() {
  awk '
    /^tool[ \t]*\(/ { block = 1; next }
    block && /^\)/  { block = 0; next }
    block && NF     { print $1; next }
    /^tool[ \t]+[^(]/ { print $2 }
  ' "$1"
}

shopt -s nullglob
built=0
for mod_dir in "$root"/tools/*/; do
  mod_dir=${mod_dir%/}
  name=$(basename "$mod_dir")
  [ -f "$mod_dir/go.mod" ] || continue
  mapfile -t packages < <(tool_packages "$mod_dir/go.mod")
  [ "${#packages[@]}" -gt 0 ] || continue
  # The binary is named after the directory, so one module may pin only one program.
  [ "${#packages[@]}" -eq 1 ] ||
    die "tools/$name/go.mod has ${#packages[@]} tool directives; keep one per module"
  package=${packages[0]}

  target="$bin_dir/$name"
  stamp="$target.stamp"
  want=$(cat "$mod_dir/go.mod" "$mod_dir"/go.sum 2>/dev/null | sha256sum | cut -d' ' -f1)
  if [ -x "$target" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "$name is up to date ($target)"
    continue
  fi

  say "building $name from $package (takes several minutes the first time)"
  mkdir -p "$bin_dir"
  # Build to a temporary name and rename, so an interrupted build never leaves a binary that a
  # later run would trust.
  (cd "$mod_dir" && go build -trimpath -o "$target.tmp" "$package") ||
    { rm -f "$target.tmp"; die "building $name failed (see the go output above)"; }
  mv -f "$target.tmp" "$target"
  printf '%s\n' "$want" > "$stamp"
  say "built $target"
  built=$((built + 1))
done
[ "$built" -eq 0 ] || say "built $built tool(s) into $bin_dir"
