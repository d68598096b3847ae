package query

import (
	"embed"
	"net/http"
	"path"

	"github.com/feedmeter/feedmeter/schemas"
)

// The usage page: HTML, script and style embedded in the binary, so the
// page works with no network but the API's own.
//
//go:embed ui/index.html ui/app.js ui/app.css
var uiFS embed.FS

// openAPIDoc is schemas/openapi.yaml.
var openAPIDoc = schemas.OpenAPI

// contentSecurity allows the page its own script, style and API, nothing
// else: no inline script, no other origin.
const contentSecurity = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	serveAsset(w, "ui/index.html")
}

func (s *Server) asset(w http.ResponseWriter, r *http.Request) {
	switch name := r.PathValue("file"); name {
	case "app.js", "app.css":
		serveAsset(w, path.Join("ui", name))
	default:
		writeError(w, http.StatusNotFound, "not_found", "", "no such file")
	}
}

func serveAsset(w http.ResponseWriter, name string) {
	b, err := uiFS.ReadFile(name)
	if err != nil {
		writeError(w, http.StatusNotFound, "not_found", "", "no such file")
		return
	}
	h := w.Header()
	switch path.Ext(name) {
	case ".html":
		h.Set("Content-Type", "text/html; charset=utf-8")
	case ".js":
		h.Set("Content-Type", "text/javascript; charset=utf-8")
	case ".css":
		h.Set("Content-Type", "text/css; charset=utf-8")
	}
	h.Set("Content-Security-Policy", contentSecurity)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-cache")
	w.Write(b)
}
