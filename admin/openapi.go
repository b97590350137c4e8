package admin

import (
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"cove/auth"
)

var pathParam = regexp.MustCompile(`\{([a-z_]+)\}`)

// handleOpenAPI serves an OpenAPI 3 document of the endpoints cove implements, made from the
// same route table the API is served from, so it cannot drift from what is there.
func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request, who auth.Principal) error {
	paths := map[string]map[string]any{}
	components := map[string]any{}
	for _, rt := range s.routes() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		if paths[path] == nil {
			paths[path] = map[string]any{}
		}
		var params []map[string]any
		for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]string{"type": "string"}})
		}
		sh := shapes[rt.pattern]
		for _, q := range strings.Split(sh.query, ",") {
			if q != "" {
				params = append(params, map[string]any{"name": q, "in": "query", "schema": map[string]string{"type": "string"}})
			}
		}
		status := sh.status
		if status == 0 {
			status = http.StatusOK
		}
		ok := map[string]any{"description": http.StatusText(status)}
		switch {
		case sh.text:
			ok["content"] = map[string]any{"text/plain": map[string]any{"schema": map[string]string{"type": "string"}}}
		case sh.resp != nil:
			ok["content"] = map[string]any{"application/json": map[string]any{"schema": schemaOf(reflect.TypeOf(sh.resp), components)}}
		}
		op := map[string]any{
			"summary": rt.summary,
			"responses": map[string]any{
				strconv.Itoa(status): ok,
				"default": map[string]any{"description": "Harbor's error body", "content": map[string]any{"application/json": map[string]any{
					"schema": map[string]any{"$ref": "#/components/schemas/Errors"}}}},
			},
		}
		if sh.req != nil {
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": schemaOf(reflect.TypeOf(sh.req), components)}}}
		}
		if params != nil {
			op["parameters"] = params
		}
		paths[path][strings.ToLower(method)] = op
	}
	components["Errors"] = map[string]any{"type": "object", "properties": map[string]any{"errors": map[string]any{"type": "array", "items": map[string]any{
		"type": "object", "properties": map[string]any{"code": map[string]string{"type": "string"}, "message": map[string]string{"type": "string"}}}}}}
	return writeJSON(w, http.StatusOK, map[string]any{
		"openapi": "3.0.3",
		"info":    map[string]string{"title": "cove API", "version": "2.0", "description": "Harbor v2.0 shapes, as implemented by cove"},
		"servers": []map[string]string{{"url": "/"}},
		"components": map[string]any{"schemas": components, "securitySchemes": map[string]any{
			"basic":   map[string]string{"type": "http", "scheme": "basic"},
			"session": map[string]string{"type": "apiKey", "in": "cookie", "name": auth.SessionCookie},
		}},
		"security": []map[string][]string{{"basic": {}}, {"session": {}}},
		"paths":    paths,
	})
}
