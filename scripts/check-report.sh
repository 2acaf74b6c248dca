#!/usr/bin/env bash
# Opens analyze's report.html in a real headless browser (Chromium, from Debian's packages:
# `apt-get install chromium`) and checks that the page loads, that every image in it loads, and that
# the browser logged no error. Exit 0 when all hold; otherwise prints what failed and exits 1.
#
# Usage: scripts/check-report.sh PATH/TO/report.html
set -euo pipefail
report="$(realpath "$1")"
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
[ -n "$browser" ] || { echo "check-report: no Chromium found (apt-get install chromium)" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# A page beside the report frames it and, once it has loaded, writes what it found into its own DOM,
# which --dump-dom prints. File pages may read each other only with --allow-file-access-from-files.
cat >"$work/check.html" <<HTML
<!doctype html><html><body><iframe id="r" src="file://$report" width="1200" height="900"></iframe>
<pre id="result">not loaded</pre>
<script>
document.getElementById('r').addEventListener('load', function () {
  var out = document.getElementById('result');
  try {
    var doc = this.contentDocument;
    var imgs = Array.prototype.slice.call(doc.images);
    var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                  .map(function (i) { return i.getAttribute('src'); });
    out.textContent = 'title=' + doc.title + ' images=' + imgs.length + ' broken=' + bad.length +
      (bad.length ? ' [' + bad.join(', ') + ']' : '');
  } catch (e) { out.textContent = 'error ' + e; }
});
</script></body></html>
HTML
"$browser" --headless --no-sandbox --disable-gpu --allow-file-access-from-files \
    --virtual-time-budget=15000 --enable-logging=stderr --v=0 \
    --dump-dom "file://$work/check.html" >"$work/dom.html" 2>"$work/log.txt" || true
result="$(sed -n 's/.*<pre id="result">\([^<]*\)<.*/\1/p' "$work/dom.html")"
[ -n "$result" ] || result="no result: the page did not load"
errors="$(grep -E 'CONSOLE|Failed to load resource|Uncaught' "$work/log.txt" | grep -vi 'check.html' || true)"
echo "check-report: $report: $result"
status=0
case "$result" in
    *"broken=0"*) ;;
    *) status=1 ;;
esac
if [ -n "$errors" ]; then
    echo "check-report: the browser logged:"; echo "$errors"; status=1
fi
[ "$(grep -o 'images=[0-9]*' <<<"$result" | cut -d= -f2)" != "0" ] || { echo "check-report: no images"; status=1; }
exit $status
