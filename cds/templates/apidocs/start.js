// The API page: Swagger UI over the service's own OpenAPI document (relative URLs, so the page works
// under any base path). No validator badge: nothing is fetched from anywhere but this service.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
