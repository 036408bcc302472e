#!/usr/bin/env bash
# Idempotent set-up for Debian 12: system packages (QGIS, GDAL, rasterio, numpy from
# Debian) and a --system-site-packages venv for the pinned pure-Python packages.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(qgis qgis-providers python3-qgis python3-rasterio python3-shapely
  python3-pyproj python3-numpy python3-scipy python3-requests python3-gdal gdal-bin
  python3-venv xvfb xauth x11-apps)
VENV=.venv
STAMP=$VENV/.setup-stamp

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install ${missing[*]}; run: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The venv must sit on Debian's Python, which is the one QGIS embeds.
if [ ! -x $VENV/bin/python ] || ! $VENV/bin/python -c 'import qgis.core' 2>/dev/null; then
  rm -rf $VENV
  /usr/bin/python3 -m venv --system-site-packages $VENV
fi
# pyproj looks for PROJ data under sys.prefix: point the venv at Debian's.
mkdir -p $VENV/share && ln -sfn /usr/share/proj $VENV/share/proj
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -f $STAMP ] || [ "$(cat $STAMP)" != "$want" ]; then
  $VENV/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 \
    | { grep -v "^WARNING: Location" || true; }
  echo "$want" > $STAMP
fi
# Make the checkout importable as the package `clearsky`, as QGIS will name it.
mkdir -p .build/importroot
ln -sfn ../.. .build/importroot/clearsky
site=$($VENV/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$PWD/.build/importroot" > "$site/clearsky-dev.pth"
echo "$PWD/tests" > "$site/clearsky-tests.pth"
$VENV/bin/python scripts/check_env.py
