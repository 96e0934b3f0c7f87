// api_docs.h: the OpenAPI 3 document of an API and interactive docs for it, on its own port.
//
//   GET /openapi.json   the document (ingest.json or dashboard.json next to this file)
//   GET /docs           Swagger UI (swagger-ui-dist from npm) showing /openapi.json
//   GET /docs/{file}    the Swagger UI files: swagger-ui.css, swagger-ui-bundle.js, init.js
//
// Everything is embedded in the binary at build time; nothing is fetched from elsewhere. Every
// answer carries a strong ETag and "Cache-Control: no-cache" (If-None-Match -> 304).
// tests/unit/services/api_docs_test.cc checks that each document lists exactly the routes the
// listener registers.
#pragma once

#include <string_view>

#include "http/router.h"

namespace iot::services {

enum class Api { kIngest, kDashboard };

// AddApiDocsRoutes registers /openapi.json, /docs and /docs/{file} for `api` on `router`.
void AddApiDocsRoutes(http::Router& router, Api api);

// OpenApiDocument returns the JSON text of `api`'s document.
std::string_view OpenApiDocument(Api api);

}  // namespace iot::services
