// Starts Swagger UI on this port's own OpenAPI document (relative to /docs, so it also works
// behind a path prefix). No validator badge: it would call an external service.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
