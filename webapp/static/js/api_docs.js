// /api/v1/docs: Swagger UI (vendored) renders the served OpenAPI document. A static file, so the
// page needs no inline script under a strict Content-Security-Policy.
(function () {
  "use strict";
  var target = document.getElementById("swagger-ui");
  if (!target || typeof SwaggerUIBundle === "undefined") { return; }
  window.lanesApiDocs = SwaggerUIBundle({
    url: target.getAttribute("data-openapi-url"),
    domNode: target,
    deepLinking: true,
    tryItOutEnabled: false,
    validatorUrl: null  // never send the document to the public validator
  });
})();
