// ui_routes.h: the web UI of the dashboard port, served from the binary.
//
//   GET /ui              the single page (index.html; hash routing inside: #/, #/devices, ...)
//   GET /ui/{file}       its files: app.js, app.css, uPlot.iife.min.js, uPlot.min.css,
//                        LICENSE-uplot.txt (404 JSON for any other name)
//   GET /ui/config.json  {"stale_after_s": N}: what the page needs to know of the server
//
//   AddUiRoutes(router, UiOptions{.stale_after = std::chrono::seconds(120)});
//
// The files are web/ui/ and uPlot (npm, web/package-lock.json), embedded at build time
// (src/web/ui/CMakeLists.txt); nothing is fetched from elsewhere. Every file answer carries a
// strong ETag and "Cache-Control: no-cache" (If-None-Match -> 304). The page itself reads the
// dashboard's JSON API and its event stream (GET /stream).
#pragma once

#include <chrono>

#include "http/router.h"

namespace iot::services {

// UiOptions are the settings the UI shows by.
struct UiOptions {
  // stale_after is how long a device may stay silent before the UI marks it stale (and stops
  // counting it as online).
  std::chrono::seconds stale_after{300};
};

// AddUiRoutes registers GET /ui, /ui/{file} and /ui/config.json on `router`.
void AddUiRoutes(http::Router& router, const UiOptions& options);

}  // namespace iot::services
