#!/usr/bin/env bash
# Takes the screenshot of the live page in docs/live-page.md (docs/img/live-page.png): runs the
# end-to-end test of the page (tests/tests/live_page.rs) in real headless Chromium, which saves
# the window once the page shows clients, events, a found msgack and the counters.
# Needs Debian's chromium and chromium-driver (scripts/test.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
LIVE_PAGE_SCREENSHOT=docs/img/live-page.png \
  cargo test --locked -p tests --test live_page the_live_page_follows_clients -- --nocapture
