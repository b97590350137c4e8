package admin

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Harbor's list parameters, for every list of the API: q (filters), sort, page and page_size.

// query is Harbor's q: k=v (exact), k=~v (fuzzy), comma-separated, all of which must match.
type query map[string]string

func parseListQuery(q string) (query, error) {
	out := query{}
	if q == "" {
		return out, nil
	}
	for _, part := range splitQuery(q) {
		k, v, ok := strings.Cut(part, "=")
		if !ok || k == "" {
			return nil, &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: fmt.Sprintf("bad query %q: want k=v or k=~v, comma-separated", q)}
		}
		out[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `'"`)
	}
	return out, nil
}

// match reports whether v passes the query's condition on key (none: it passes).
func (q query) match(key, v string) bool {
	want, ok := q[key]
	switch {
	case !ok:
		return true
	case strings.HasPrefix(want, "~"):
		return strings.Contains(v, strings.TrimPrefix(want, "~"))
	}
	return v == want
}

// matchTags is the tags condition: tags=* (tagged), tags=nil (untagged), tags=x or tags=~x.
func (q query) matchTags(tags []string) bool {
	want, ok := q["tags"]
	switch {
	case !ok:
		return true
	case want == "*":
		return len(tags) > 0
	case want == "nil":
		return len(tags) == 0
	}
	return slices.ContainsFunc(tags, func(t string) bool { return q.match("tags", t) })
}

// sortBy sorts list by Harbor's sort parameter: fields separated by commas, - for descending.
func sortBy[T any](list []T, spec string, by map[string]func(a, b T) int) error {
	if spec == "" {
		return nil
	}
	var cmps []func(a, b T) int
	for f := range strings.SplitSeq(spec, ",") {
		desc := strings.HasPrefix(f, "-")
		c, ok := by[strings.TrimPrefix(f, "-")]
		if !ok {
			return &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: fmt.Sprintf("cannot sort by %q", f)}
		}
		if desc {
			c = func(a, b T) int { return -by[strings.TrimPrefix(f, "-")](a, b) }
		}
		cmps = append(cmps, c)
	}
	slices.SortStableFunc(list, func(a, b T) int {
		for _, c := range cmps {
			if n := c(a, b); n != 0 {
				return n
			}
		}
		return 0
	})
	return nil
}

// writePage writes one page of list with X-Total-Count and Link headers, as Harbor pages.
func writePage[T any](w http.ResponseWriter, r *http.Request, list []T) error {
	from, to, err := pageOf(w, r, len(list))
	if err != nil {
		return err
	}
	out := list[from:to]
	if out == nil {
		out = []T{}
	}
	return writeJSON(w, http.StatusOK, out)
}

// pageOf reads page and page_size, sets X-Total-Count and the Link header of a list of total
// items, and returns the bounds of the page asked for.
func pageOf(w http.ResponseWriter, r *http.Request, total int) (from, to int, err error) {
	page, size, err := pageParams(r.URL.Query())
	if err != nil {
		return 0, 0, err
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	from = min((page-1)*size, total)
	to = min(from+size, total)
	link := func(n int) string {
		q := r.URL.Query()
		q.Set("page", strconv.Itoa(n))
		q.Set("page_size", strconv.Itoa(size))
		return "<" + r.URL.Path + "?" + q.Encode() + ">"
	}
	var links []string
	if page > 1 {
		links = append(links, link(page-1)+`; rel="prev"`)
	}
	if to < total {
		links = append(links, link(page+1)+`; rel="next"`)
	}
	if len(links) > 0 {
		w.Header().Set("Link", strings.Join(links, " , "))
	}
	return from, to, nil
}

type descriptionReq struct {
	Description string `json:"description"`
}

type tagReq struct {
	Name string `json:"name"`
}

// pageParams reads Harbor's page (from 1) and page_size (1 to 100, default 10).
func pageParams(q url.Values) (page, size int, err error) {
	if page, err = intParam(q.Get("page"), 1, 1, 1<<30); err != nil {
		return 0, 0, err
	}
	size, err = intParam(q.Get("page_size"), 10, 1, 100)
	return page, size, err
}

func intParam(v string, def, lo, hi int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: fmt.Sprintf("%q is not a number from %d to %d", v, lo, hi)}
	}
	return n, nil
}

// pathID is the number the path element name holds (an id), or a 400 naming it.
func pathID(r *http.Request, name string) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue(name), 10, 64)
	if err != nil {
		return 0, &apiError{Status: http.StatusBadRequest, Code: "BAD_REQUEST", Message: fmt.Sprintf("%s %q must be a number", name, r.PathValue(name))}
	}
	return id, nil
}
