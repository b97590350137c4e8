package admin

import (
	"net/http"
	"regexp"
	"strings"

	"cove/auth"
)

var pathParam = regexp.MustCompile(`\{([a-z_]+)\}`)

// handleOpenAPI serves an OpenAPI 3 document of the endpoints cove implements, made from the
// same route table the API is served from, so it cannot drift from what is there.
func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	paths := map[string]map[string]any{}
	for _, rt := range s.routes() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		if paths[path] == nil {
			paths[path] = map[string]any{}
		}
		var params []map[string]any
		for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]string{"type": "string"}})
		}
		op := map[string]any{
			"summary":   rt.summary,
			"responses": map[string]any{"default": map[string]any{"description": `Success, or Harbor's error body {"errors":[{"code","message"}]}`}},
		}
		if params != nil {
			op["parameters"] = params
		}
		paths[path][strings.ToLower(method)] = op
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"openapi": "3.0.3",
		"info":    map[string]string{"title": "cove API", "version": "2.0", "description": "Harbor v2.0 shapes, as implemented by cove"},
		"servers": []map[string]string{{"url": "/"}},
		"components": map[string]any{"securitySchemes": map[string]any{
			"basic":   map[string]string{"type": "http", "scheme": "basic"},
			"session": map[string]string{"type": "apiKey", "in": "cookie", "name": auth.SessionCookie},
		}},
		"security": []map[string][]string{{"basic": {}}, {"session": {}}},
		"paths":    paths,
	})
}
