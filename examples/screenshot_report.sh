#!/usr/bin/env bash
# Render an audit report in headless Chromium (Debian package `chromium`) and save a screenshot, to check
# that the plots render: bash examples/screenshot_report.sh demo-out/audit.html demo-out/audit.png
set -euo pipefail
report=$(realpath "$1")
png=${2:-${report%.html}.png}
profile=$(mktemp -d)
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --window-size=1100,2400 --screenshot="$png" "file://$report" 2>/dev/null
rm -rf "$profile"
echo "screenshot: $png"
