#!/usr/bin/env bash
# Makes the Rust toolchain pinned in rust-toolchain.toml runnable; scripts/test.sh and
# scripts/demo.sh call it before their first cargo command. Prints nothing when it already is.
#
# rust-toolchain.toml names 1.95.0. Where the machine's stable toolchain is that version, it is
# registered under the pinned name (no download). Otherwise the pinned one is installed here
# (`rustup run` does not install a missing toolchain), with the components the file lists.
# A link made so follows stable: after stable moves on, the pinned name would run another
# version, so the version itself is checked, not only that the name runs.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v rustup >/dev/null 2>&1 || exit 0
pinned="$(sed -n 's/^channel = "\(.*\)"$/\1/p' rust-toolchain.toml)"
version_of() { rustup run "$1" rustc --version 2>/dev/null | cut -d' ' -f2 || true; }
[ "$(version_of "$pinned")" != "$pinned" ] || exit 0

toolchains="${RUSTUP_HOME:-$HOME/.rustup}/toolchains"
if [ "$(version_of stable)" = "$pinned" ]; then
  # No download needed (nor possible on some machines): `rustup toolchain link` refuses names
  # that look like versions; rustup finds a toolchain by its directory, so a symbolic link
  # under the pinned name does it.
  host="$(rustup run stable rustc -vV | sed -n 's/^host: //p')"
  echo "using the installed stable toolchain ($pinned) as $pinned-$host"
  ln -sfn "$toolchains/stable-$host" "$toolchains/$pinned-$host"
  exit 0
fi

link="$toolchains/$pinned-$(rustup run stable rustc -vV 2>/dev/null | sed -n 's/^host: //p' || true)"
# A link under the pinned name (made above) is not installed over: rustup would update the
# toolchain it points to, stable, to the pinned version. The error below asks to remove it.
if [ ! -L "$link" ]; then
  echo "installing toolchain $pinned (rust-toolchain.toml) with rustup (first time only)..."
  install_log="$(mktemp)"
  if rustup toolchain install "$pinned" --profile minimal \
    --component rustfmt --component clippy >"$install_log" 2>&1 &&
    [ "$(version_of "$pinned")" = "$pinned" ]; then
    rm -f "$install_log"
    exit 0
  fi
  echo "rustup toolchain install $pinned failed:" >&2
  tail -n 20 "$install_log" >&2
  rm -f "$install_log"
fi

echo "toolchain $pinned (rust-toolchain.toml) is not installed (or its name runs" \
  "$(version_of "$pinned")): rustup toolchain install $pinned" >&2
if [ -L "$link" ]; then
  echo "first remove $link: it is a link to another toolchain, which an install would update" >&2
fi
exit 1
