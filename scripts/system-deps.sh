#!/usr/bin/env bash
# Debian packages that qmsflow needs at run time outside Python: WeasyPrint (PDF controlled copies)
# loads GObject, Pango, PangoFT2, HarfBuzz (+ subset), fontconfig through cffi, and the controlled-copy
# template uses the DejaVu fonts. Idempotent: exits 0 at once when all are installed. When some are
# missing: as root runs `apt-get update` once and installs them; otherwise prints the command, exits 1.
# Keep the list in step with DEBIAN_PACKAGES in qmsflow/adapters/render.py.
set -euo pipefail

PACKAGES=(
  libglib2.0-0        # libgobject-2.0.so.0
  libpango-1.0-0      # libpango-1.0.so.0
  libpangoft2-1.0-0   # libpangoft2-1.0.so.0
  libharfbuzz0b       # libharfbuzz.so.0
  libharfbuzz-subset0 # libharfbuzz-subset.so.0 (font subsetting; smaller, faster PDFs)
  libfontconfig1      # libfontconfig.so.1
  fonts-dejavu-core   # "DejaVu Sans" / "DejaVu Sans Mono" used by templates/documents/_controlled.html.j2
)

# --with-browser: also Debian's chromium, which the browser tests drive with Playwright
# (Playwright's own browser download cannot work offline). `make test` passes it; `make demo` does not.
if [[ "${1:-}" == "--with-browser" ]]; then
  PACKAGES+=(chromium)
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "system-deps: not a Debian-based system; install the equivalents of: ${PACKAGES[*]}" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
  echo "system-deps: all ${#PACKAGES[@]} packages installed"
  exit 0
fi

cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
  echo "system-deps: missing Debian packages: ${missing[*]}" >&2
  echo "run as root:  apt-get update && $cmd" >&2
  exit 1
fi

echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "system-deps: done"
