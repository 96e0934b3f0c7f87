#include "web/assets.h"

#include <string>

#include <boost/beast/http/field.hpp>
#include <boost/beast/http/status.hpp>

#include "core/text.h"

namespace iot::web {

namespace bh = boost::beast::http;

const Asset* AssetSet::Find(std::string_view name) const {
  for (const Asset& a : assets_) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

namespace {
boost::beast::string_view Bsv(std::string_view s) { return {s.data(), s.size()}; }
std::string_view Opaque(std::string_view tag) {
  if (tag.starts_with("W/")) tag.remove_prefix(2);
  return tag;
}
}  // namespace

bool IfNoneMatchMatches(std::string_view if_none_match, std::string_view etag) {
  std::string_view rest = if_none_match;
  while (!rest.empty()) {
    auto comma = rest.find(',');
    std::string_view item = core::TrimBlanks(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    if (item == "*" || (!item.empty() && Opaque(item) == Opaque(etag))) return true;
  }
  return false;
}

http::Response ServeAsset(const Asset& asset, const http::Request& request,
                          std::string_view cache_control) {
  auto inm = request.find(bh::field::if_none_match);
  if (inm != request.end() &&
      IfNoneMatchMatches(std::string_view(inm->value().data(), inm->value().size()), asset.etag)) {
    http::Response r{bh::status::not_modified, 11};
    r.set(bh::field::etag, Bsv(asset.etag));
    r.set(bh::field::cache_control, Bsv(cache_control));
    return r;
  }
  http::Response r = http::MakeResponse(200, asset.content_type, std::string(asset.data));
  r.set(bh::field::etag, Bsv(asset.etag));
  r.set(bh::field::cache_control, Bsv(cache_control));
  return r;
}

}  // namespace iot::web
