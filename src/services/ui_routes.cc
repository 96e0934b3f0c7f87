#include "services/ui_routes.h"

#include <stdexcept>
#include <string>
#include <utility>

#include <boost/beast/http/verb.hpp>

#include "http/response.h"
#include "iot_ui_assets.h"
#include "web/assets.h"

namespace iot::services {

namespace bh = boost::beast::http;

void AddUiRoutes(http::Router& router, const UiOptions& options) {
  const web::Asset* page = web::UiAssets().Find("index.html");
  if (page == nullptr) throw std::logic_error("ui: index.html not embedded");
  router.Add(bh::verb::get, "/ui",
             [page](const http::Request& req, const http::PathParams&, http::Respond respond) {
               respond(web::ServeAsset(*page, req));
             });
  router.Add(bh::verb::get, "/ui/{file}",
             [](const http::Request& req, const http::PathParams& params, http::Respond respond) {
               if (const web::Asset* a = web::UiAssets().Find(params.Get("file"))) {
                 respond(web::ServeAsset(*a, req));
               } else {
                 respond(http::MakeError(404, "not_found", "no such file", "file"));
               }
             });
  // A literal segment wins over {file}, so this is never looked up among the assets. Built once:
  // the options do not change while the server runs.
  std::string config = "{\"stale_after_s\":" + std::to_string(options.stale_after.count()) + "}";
  router.Add(bh::verb::get, "/ui/config.json",
             [config](const http::Request&, const http::PathParams&, http::Respond respond) {
               http::Response r = http::MakeJson(200, config);
               r.set(bh::field::cache_control, "no-cache");
               respond(std::move(r));
             });
}

}  // namespace iot::services
