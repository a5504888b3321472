#!/usr/bin/env bash
# Render an audit report in headless Chromium (Debian package `chromium`) and save a screenshot beside it, to
# check that the plots render: bash examples/screenshot_report.sh demo-out/audit.html
# writes demo-out/audit.screenshot.png (never the audit's own audit.png histogram); a second argument names
# another file. Chinese text needs a CJK font: without one every character renders as a box, so the script
# stops and names the package (Debian: fonts-noto-cjk).
set -euo pipefail
report=$(realpath "$1")
png=${2:-${report%.html}.screenshot.png}
if command -v fc-list >/dev/null && ! fc-list :lang=zh family | grep -q .; then
  echo "error: no CJK font: Chinese text would render as boxes; install one (Debian: apt-get install fonts-noto-cjk)" >&2
  exit 1
fi
profile=$(mktemp -d)
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --window-size=1100,2400 --screenshot="$png" "file://$report" 2>/dev/null
rm -rf "$profile"
echo "screenshot: $png"
