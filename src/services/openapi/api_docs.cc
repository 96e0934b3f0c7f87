#include "services/openapi/api_docs.h"

#include <stdexcept>
#include <string>

#include <boost/beast/http/verb.hpp>

#include "http/response.h"
#include "iot_api_docs_assets.h"
#include "web/assets.h"

namespace iot::services {

namespace bh = boost::beast::http;

namespace {
const web::Asset& Must(std::string_view name) {
  const web::Asset* a = web::ApiDocsAssets().Find(name);
  if (a == nullptr) throw std::logic_error("api docs: asset not embedded: " + std::string(name));
  return *a;
}
const web::Asset& Document(Api api) {
  return Must(api == Api::kIngest ? "ingest.json" : "dashboard.json");
}
}  // namespace

std::string_view OpenApiDocument(Api api) { return Document(api).data; }

void AddApiDocsRoutes(http::Router& router, Api api) {
  const web::Asset* document = &Document(api);
  const web::Asset* page = &Must("docs.html");
  router.Add(bh::verb::get, "/openapi.json",
             [document](const http::Request& req, const http::PathParams&, http::Respond respond) {
               respond(web::ServeAsset(*document, req));
             });
  router.Add(bh::verb::get, "/docs",
             [page](const http::Request& req, const http::PathParams&, http::Respond respond) {
               respond(web::ServeAsset(*page, req));
             });
  router.Add(bh::verb::get, "/docs/{file}",
             [](const http::Request& req, const http::PathParams& params, http::Respond respond) {
               std::string name = "docs/";
               name += params.Get("file");
               if (const web::Asset* a = web::ApiDocsAssets().Find(name)) {
                 respond(web::ServeAsset(*a, req));
               } else {
                 respond(http::MakeError(404, "not_found", "no such file", "file"));
               }
             });
}

}  // namespace iot::services
