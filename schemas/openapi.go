package schemas

import _ "embed" // for OpenAPI

// OpenAPI is the OpenAPI 3.1 document of the query service (openapi.yaml),
// served by `feedmeter serve` at /openapi.yaml and held equal to its routes by
// query's TestOpenAPIMatchesRoutes.
//
//go:embed openapi.yaml
var OpenAPI []byte
