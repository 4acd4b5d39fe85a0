#!/usr/bin/env bash
# Builds the pinned infrastructure binaries (Jaeger, Dex and oauth2-proxy) from the Go modules
# under tools/. Each tools/<name>/go.mod names one program in a `tool` directive; the binary
# lands in .cache/bin/<name>. A stamp holding the hash of go.mod and go.sum sits next to each
# binary, so a second run only rebuilds what a version bump changed.
#
# Then brings in Jaeger UI's production build, which the Go module does not ship: the crate
# pinned in tools/jaeger-ui/Cargo.lock carries it; cargo fetches it (nothing is compiled) and its
# `jaeger-ui/build/` folder is copied to .cache/jaeger-ui/, with the same kind of stamp.
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

# -- Jaeger UI: index.html + static/ from the crate pinned in tools/jaeger-ui/Cargo.lock ---------

# Copies the crate's `jaeger-ui/build/` to .cache/jaeger-ui/, unless the stamp says the lock has
# not changed since the last copy.
fetch_jaeger_ui() {
  local manifest="$root/tools/jaeger-ui/Cargo.toml" crate=otlp-embedded
  local target="$root/.cache/jaeger-ui"
  local stamp="$target.stamp" tmp="$target.tmp" old="$target.old"
  local want crate_manifest ui_dir notice release
  want=$(cat "$manifest" "$root/tools/jaeger-ui/Cargo.lock" | sha256sum | cut -d' ' -f1)
  if [ -f "$target/index.html" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "jaeger-ui is up to date ($target)"
    return
  fi

  command -v cargo >/dev/null 2>&1 ||
    die "cargo is not installed or not on PATH; it fetches Jaeger UI (tools/jaeger-ui/Cargo.toml). Install Rust (https://rustup.rs/) and rerun"

  say "fetching Jaeger UI: crate $crate as pinned in tools/jaeger-ui/Cargo.lock (nothing is compiled)"
  cargo fetch --locked --manifest-path "$manifest" ||
    die "cargo fetch failed (see the cargo output above)"

  # Where cargo unpacked the crate, as cargo itself reports it: the registry's folder names
  # are cargo's business.
  crate_manifest=$(
    cargo metadata --format-version 1 --locked --manifest-path "$manifest" |
      python3 -c '
import json, sys
name = sys.argv[1]
found = [p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == name]
if len(found) != 1:
    sys.exit(f"cargo metadata lists {len(found)} packages named {name}")
print(found[0])
' "$crate"
  ) || die "cargo metadata did not locate $crate"
  ui_dir="$(dirname "$crate_manifest")/jaeger-ui"
  [ -f "$ui_dir/build/index.html" ] ||
    die "$crate has no jaeger-ui/build/index.html (looked in $ui_dir)"

  # Copy to a temporary folder and rename, so an interrupted copy never leaves a UI that a
  # later run would trust. README names the UI release, LICENSE is Jaeger UI's (Apache-2.0);
  # Jaeger serves only index.html and static/ from this folder.
  rm -rf "$tmp" "$old"
  mkdir -p "$tmp"
  cp -R "$ui_dir/build/." "$tmp/"
  for notice in README LICENSE NOTICE; do
    [ ! -f "$ui_dir/$notice" ] || cp "$ui_dir/$notice" "$tmp/$notice"
  done
  [ ! -e "$target" ] || mv "$target" "$old"
  mv "$tmp" "$target"
  rm -rf "$old"
  printf '%s\n' "$want" > "$stamp"
  release=$(grep -o -m1 'Jaeger UI [0-9][0-9.]*[0-9]' "$target/README" 2>/dev/null || true)
  say "copied ${release:-Jaeger UI} into $target"
}

fetch_jaeger_ui
