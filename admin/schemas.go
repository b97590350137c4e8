package admin

import (
	"reflect"
	"strings"
	"time"

	"cove/auth"
	"cove/cache"
	"cove/internal/webhook"
)

// The OpenAPI document's request and response schemas, made by reflection from the very types
// the handlers decode and encode, so that they cannot drift from what is sent. Every route has an
// entry (TestEveryRouteHasAShape).

// shape is what an endpoint takes and answers.
type shape struct {
	req    any    // the request body's type (a zero value), nil for none
	resp   any    // the response body's type, nil for none
	status int    // the success status; 0 means 200
	text   bool   // the response is text/plain
	query  string // query parameters, comma-separated
}

var (
	pageQuery = "page,page_size"
	listQuery = "q,sort,page,page_size"
)

// shapes is every endpoint's shape, by route pattern.
var shapes = map[string]shape{
	"POST /api/v2.0/projects":                                                               {req: projectReq{}, status: 201},
	"GET /api/v2.0/projects":                                                                {resp: []project{}, query: "name,public," + pageQuery},
	"HEAD /api/v2.0/projects":                                                               {query: "project_name"},
	"GET /api/v2.0/projects/{name}":                                                         {resp: project{}},
	"PUT /api/v2.0/projects/{name}":                                                         {req: projectUpdateReq{}},
	"DELETE /api/v2.0/projects/{name}":                                                      {},
	"GET /api/v2.0/projects/{name}/repositories":                                            {resp: []repository{}, query: listQuery},
	"GET /api/v2.0/repositories":                                                            {resp: []repository{}, query: listQuery},
	"GET /api/v2.0/projects/{name}/repositories/{repo}":                                     {resp: repository{}},
	"PUT /api/v2.0/projects/{name}/repositories/{repo}":                                     {req: descriptionReq{}},
	"DELETE /api/v2.0/projects/{name}/repositories/{repo}":                                  {},
	"GET /api/v2.0/projects/{name}/repositories/{repo}/artifacts":                           {resp: []artifact{}, query: "with_tag,with_immutable_status," + listQuery},
	"POST /api/v2.0/projects/{name}/repositories/{repo}/artifacts":                          {status: 201, query: "from"},
	"GET /api/v2.0/projects/{name}/repositories/{repo}/artifacts/{reference}":               {resp: artifact{}, query: "with_tag,with_immutable_status"},
	"DELETE /api/v2.0/projects/{name}/repositories/{repo}/artifacts/{reference}":            {},
	"GET /api/v2.0/projects/{name}/repositories/{repo}/artifacts/{reference}/tags":          {resp: []tag{}, query: listQuery},
	"POST /api/v2.0/projects/{name}/repositories/{repo}/artifacts/{reference}/tags":         {req: tagReq{}, status: 201},
	"DELETE /api/v2.0/projects/{name}/repositories/{repo}/artifacts/{reference}/tags/{tag}": {},
	"GET /api/v2.0/projects/{name}/immutabletagrules":                                       {resp: []immutableRule{}, query: pageQuery},
	"POST /api/v2.0/projects/{name}/immutabletagrules":                                      {req: immutableRule{}, status: 201},
	"PUT /api/v2.0/projects/{name}/immutabletagrules/{id}":                                  {req: immutableRule{}},
	"DELETE /api/v2.0/projects/{name}/immutabletagrules/{id}":                               {},
	"GET /api/v2.0/projects/{name}/members":                                                 {resp: []member{}, query: "entityname," + pageQuery},
	"POST /api/v2.0/projects/{name}/members":                                                {req: memberReq{}, status: 201},
	"GET /api/v2.0/projects/{name}/members/{id}":                                            {resp: member{}},
	"PUT /api/v2.0/projects/{name}/members/{id}":                                            {req: roleReq{}},
	"DELETE /api/v2.0/projects/{name}/members/{id}":                                         {},
	"GET /api/v2.0/projects/{name}/logs":                                                    {resp: []auth.Event{}, query: "q," + pageQuery},
	"GET /api/v2.0/projects/{name}/summary":                                                 {resp: map[string]any{}},
	"GET /api/v2.0/projects/{name}/_deletable":                                              {resp: map[string]any{}},
	"POST /api/v2.0/users":                                                                  {req: userReq{}, status: 201},
	"GET /api/v2.0/users":                                                                   {resp: []user{}, query: "username,email," + pageQuery},
	"GET /api/v2.0/users/current":                                                           {resp: user{}},
	"GET /api/v2.0/users/current/permissions":                                               {resp: []map[string]string{}, query: "scope,relative"},
	"GET /api/v2.0/users/{id}":                                                              {resp: user{}},
	"PUT /api/v2.0/users/{id}/password":                                                     {req: passwordReq{}},
	"PUT /api/v2.0/users/{id}/sysadmin":                                                     {req: sysadminReq{}},
	"DELETE /api/v2.0/users/{id}":                                                           {},
	"POST /api/v2.0/robots":                                                                 {req: robotReq{}, resp: robot{}, status: 201},
	"GET /api/v2.0/robots":                                                                  {resp: []robot{}, query: "project," + pageQuery},
	"GET /api/v2.0/robots/{id}":                                                             {resp: robot{}},
	"DELETE /api/v2.0/robots/{id}":                                                          {},
	"GET /api/v2.0/audit-logs":                                                              {resp: []auth.Event{}, query: "q," + pageQuery},
	"GET /api/v2.0/configurations":                                                          {resp: map[string]setting{}},
	"PUT /api/v2.0/configurations":                                                          {req: settingsReq{}},
	"GET /api/v2.0/mirror/status":                                                           {resp: mirrorStatus{}},
	"GET /api/v2.0/mirror/repositories":                                                     {resp: []mirrorRepository{}},
	"DELETE /api/v2.0/mirror/repositories":                                                  {query: "name"},
	"POST /api/v2.0/mirror/warm":                                                            {req: warmReq{}, status: 201},
	"GET /api/v2.0/mirror/warm":                                                             {resp: []cache.WarmJob{}, query: pageQuery},
	"GET /api/v2.0/mirror/warm/{id}":                                                        {resp: cache.WarmJob{}},
	"GET /api/v2.0/cluster/nodes":                                                           {resp: []Node{}},
	"GET /api/v2.0/system/scrub":                                                            {resp: scrubStatus{}},
	"GET /api/v2.0/system/gc":                                                               {resp: []gcHistory{}, query: pageQuery},
	"GET /api/v2.0/system/gc/{id}":                                                          {resp: gcHistory{}},
	"GET /api/v2.0/system/gc/{id}/log":                                                      {text: true},
	"GET /api/v2.0/system/gc/schedule":                                                      {resp: gcHistory{}},
	"POST /api/v2.0/system/gc/schedule":                                                     {req: gcScheduleReq{}, status: 201},
	"PUT /api/v2.0/system/gc/schedule":                                                      {req: gcScheduleReq{}},
	"POST /api/v2.0/system/token-key/rotate":                                                {resp: map[string]string{}},
	"POST /api/v2.0/system/tls/renew":                                                       {},
	"GET /api/v2.0/systeminfo":                                                              {resp: map[string]any{}},
	"GET /api/v2.0/systeminfo/volumes":                                                      {resp: map[string][]map[string]int64{}},
	"GET /api/v2.0/health":                                                                  {resp: map[string]any{}},
	"GET /api/v2.0/statistics":                                                              {resp: map[string]int64{}},
	"GET /api/v2.0/search":                                                                  {resp: map[string][]any{}, query: "q"},
	"GET /api/v2.0/retentions/metadatas":                                                    {resp: map[string]any{}},
	"POST /api/v2.0/retentions":                                                             {req: retentionPolicy{}, status: 201},
	"GET /api/v2.0/retentions/{id}":                                                         {resp: retentionPolicy{}},
	"PUT /api/v2.0/retentions/{id}":                                                         {req: retentionPolicy{}},
	"DELETE /api/v2.0/retentions/{id}":                                                      {},
	"POST /api/v2.0/retentions/{id}/executions": {req: struct {
		DryRun bool `json:"dry_run"`
	}{}, status: 201},
	"GET /api/v2.0/retentions/{id}/executions":                                             {resp: []retentionExecution{}, query: pageQuery},
	"GET /api/v2.0/projects/{name}/webhook/policies":                                       {resp: []webhook.Policy{}, query: pageQuery},
	"POST /api/v2.0/projects/{name}/webhook/policies":                                      {req: webhook.Policy{}, status: 201},
	"GET /api/v2.0/projects/{name}/webhook/policies/{id}":                                  {resp: webhook.Policy{}},
	"PUT /api/v2.0/projects/{name}/webhook/policies/{id}":                                  {req: webhook.Policy{}},
	"DELETE /api/v2.0/projects/{name}/webhook/policies/{id}":                               {},
	"GET /api/v2.0/projects/{name}/webhook/policies/{id}/executions":                       {resp: []webhook.Execution{}, query: pageQuery},
	"GET /api/v2.0/projects/{name}/webhook/policies/{id}/executions/{eid}/tasks":           {resp: []webhook.Task{}, query: pageQuery},
	"GET /api/v2.0/projects/{name}/webhook/policies/{id}/executions/{eid}/tasks/{tid}/log": {text: true},
	"GET /api/v2.0/projects/{name}/webhook/events":                                         {resp: map[string]any{}},
	"GET /api/v2.0/system/webhook/policies":                                                {resp: []webhook.Policy{}, query: pageQuery},
	"POST /api/v2.0/system/webhook/policies":                                               {req: webhook.Policy{}, status: 201},
	"GET /api/v2.0/system/webhook/policies/{id}":                                           {resp: webhook.Policy{}},
	"PUT /api/v2.0/system/webhook/policies/{id}":                                           {req: webhook.Policy{}},
	"DELETE /api/v2.0/system/webhook/policies/{id}":                                        {},
	"GET /api/v2.0/system/webhook/policies/{id}/executions":                                {resp: []webhook.Execution{}, query: pageQuery},
	"GET /api/v2.0/system/webhook/policies/{id}/executions/{eid}/tasks":                    {resp: []webhook.Task{}, query: pageQuery},
	"GET /api/v2.0/system/webhook/policies/{id}/executions/{eid}/tasks/{tid}/log":          {text: true},
	"PATCH /api/v2.0/retentions/{id}/executions/{eid}": {req: struct {
		Action string `json:"action"`
	}{}},
	"GET /api/v2.0/retentions/{id}/executions/{eid}/tasks":       {resp: []retentionTask{}, query: pageQuery},
	"GET /api/v2.0/retentions/{id}/executions/{eid}/tasks/{tid}": {text: true},
	"GET /api/v2.0/quotas":                        {resp: []quota{}, query: "reference,reference_id,sort," + pageQuery},
	"GET /api/v2.0/quotas/{id}":                   {resp: quota{}},
	"PUT /api/v2.0/quotas/{id}":                   {req: quotaReq{}},
	"POST /api/v2.0/ldap/ping":                    {resp: map[string]any{}},
	"POST /api/v2.0/email/ping":                   {req: emailPingReq{}, resp: map[string]any{}},
	"POST /api/v2.0/users/password-reset":         {req: resetReq{}, status: 202},
	"POST /api/v2.0/users/password-reset/confirm": {req: resetConfirmReq{}},
	"GET /api/v2.0/openapi.json":                  {resp: map[string]any{}},
}

// schemaOf is the JSON schema of v's type; named structs go into components, referenced.
func schemaOf(t reflect.Type, components map[string]any) map[string]any {
	if t == reflect.TypeFor[time.Time]() {
		return map[string]any{"type": "string", "format": "date-time"}
	}
	switch t.Kind() {
	case reflect.Pointer:
		s := schemaOf(t.Elem(), components)
		s["nullable"] = true
		return s
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer", "format": "int64"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Slice, reflect.Array:
		return map[string]any{"type": "array", "items": schemaOf(t.Elem(), components)}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem(), components)}
	case reflect.Struct:
		name := t.Name()
		if name != "" {
			if t.PkgPath() != "cove/admin" {
				name = t.String() // auth.Event: no clash with admin's own names
			}
			name = strings.ReplaceAll(name, ".", "_")
			if _, ok := components[name]; !ok {
				components[name] = map[string]any{} // a placeholder against recursion
				components[name] = structSchema(t, components)
			}
			return map[string]any{"$ref": "#/components/schemas/" + name}
		}
		return structSchema(t, components)
	}
	return map[string]any{} // any
}

func structSchema(t reflect.Type, components map[string]any) map[string]any {
	props := map[string]any{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			if emb, ok := schemaOf(f.Type, components)["$ref"].(string); ok {
				// An embedded struct's fields are the outer's: merge them.
				if c, ok := components[strings.TrimPrefix(emb, "#/components/schemas/")].(map[string]any); ok {
					if ps, ok := c["properties"].(map[string]any); ok {
						for k, v := range ps {
							props[k] = v
						}
					}
				}
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		props[name] = schemaOf(f.Type, components)
	}
	return map[string]any{"type": "object", "properties": props}
}
