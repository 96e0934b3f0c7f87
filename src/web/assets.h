// assets.h: files embedded in the binary at build time (cmake/EmbedAssets.cmake), and serving
// them over HTTP with an ETag.
//
//   #include "iot_docs_assets.h"            // generated: const AssetSet& DocsAssets();
//   if (const web::Asset* a = web::DocsAssets().Find("swagger-ui.css"))
//     respond(web::ServeAsset(*a, request));  // 200 with the bytes, or 304 on If-None-Match
//
// An AssetSet is immutable and thread-safe; its bytes live in the binary's read-only data.
#pragma once

#include <span>
#include <string_view>

#include "http/response.h"

namespace iot::web {

// Asset is one embedded file.
struct Asset {
  std::string_view name;          // the name it was embedded under, e.g. "swagger-ui.css"
  std::string_view content_type;  // from its extension, e.g. "text/css; charset=utf-8"
  std::string_view etag;          // strong ETag, quoted: "\"<first 128 bits of SHA-256, hex>\""
  std::string_view data;          // the bytes
};

// AssetSet is the files of one iot_embed_assets library.
class AssetSet {
 public:
  explicit AssetSet(std::span<const Asset> assets) : assets_(assets) {}
  // Find returns the asset called `name`, or nullptr.
  const Asset* Find(std::string_view name) const;
  std::span<const Asset> All() const { return assets_; }

 private:
  std::span<const Asset> assets_;
};

// kCacheControl makes clients revalidate every time (a cheap 304 through the ETag), so an
// upgraded binary is never hidden behind a stale cache.
inline constexpr std::string_view kCacheControl = "no-cache";

// ServeAsset answers a GET or HEAD of `asset`: 304 without a body when the request's
// If-None-Match lists its ETag (or is "*"), else 200 with the bytes; both carry ETag and
// Cache-Control.
http::Response ServeAsset(const Asset& asset, const http::Request& request,
                          std::string_view cache_control = kCacheControl);

// IfNoneMatchMatches reports whether an If-None-Match value lists `etag` (weak comparison, as
// RFC 9110 asks for If-None-Match) or is "*".
bool IfNoneMatchMatches(std::string_view if_none_match, std::string_view etag);

}  // namespace iot::web
