// Starts Swagger UI on /docs/ (served by api/routes/docs.py) with Herald's spec. A file, not
// an inline script, so the page's Content-Security-Policy can forbid inline code.
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  displayOperationId: true,
  // Swagger UI's default asks validator.swagger.io about the spec: nothing leaves this origin.
  validatorUrl: null,
});
