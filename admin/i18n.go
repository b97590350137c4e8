package admin

import (
	"fmt"
	"net/http"
	"time"

	"golang.org/x/text/language"
	"golang.org/x/text/message"
	"golang.org/x/text/message/catalog"
)

// The admin page speaks English and Simplified Chinese: every string has a key in both tables
// (a test fails when one is missing), the language comes from the cove_lang cookie that the
// switcher sets, else from Accept-Language.

const langCookie = "cove_lang"

var (
	langTags = map[string]language.Tag{"en": language.English, "zh": language.SimplifiedChinese}
	matcher  = language.NewMatcher([]language.Tag{language.English, language.SimplifiedChinese})
)

// locale is the language of one page view.
type locale struct {
	Code string // en or zh
	p    *message.Printer
}

// newCatalog builds the message catalog from the tables.
func newCatalog() (*catalog.Builder, error) {
	b := catalog.NewBuilder(catalog.Fallback(language.English))
	for code, table := range translations {
		for key, text := range table {
			if err := b.SetString(langTags[code], key, text); err != nil {
				return nil, fmt.Errorf("translation %s/%s: %w", code, key, err)
			}
		}
	}
	return b, nil
}

func (w *webPages) localeFor(r *http.Request) locale {
	code := ""
	if c, err := r.Cookie(langCookie); err == nil {
		if _, ok := langTags[c.Value]; ok {
			code = c.Value
		}
	}
	if code == "" {
		tags, _, _ := language.ParseAcceptLanguage(r.Header.Get("Accept-Language"))
		_, i, _ := matcher.Match(tags...)
		code = map[int]string{0: "en", 1: "zh"}[i]
	}
	return locale{Code: code, p: message.NewPrinter(langTags[code], message.Catalog(w.catalog))}
}

// T translates key, formatting args as the language does.
func (l locale) T(key string, args ...any) string { return l.p.Sprintf(key, args...) }

// Time writes a time the language's way, in UTC.
func (l locale) Time(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	t = t.UTC()
	if l.Code == "zh" {
		return fmt.Sprintf("%d年%d月%d日 %s UTC", t.Year(), int(t.Month()), t.Day(), t.Format("15:04"))
	}
	return t.Format("Jan 2, 2006 15:04 UTC")
}

// Size writes a byte count with a binary unit, the number the language's way.
func (l locale) Size(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	v := float64(n)
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return l.p.Sprintf("%d %s", n, units[0])
	}
	return l.p.Sprintf("%.1f %s", v, units[i])
}

// Number writes an integer with the language's grouping.
func (l locale) Number(n int64) string { return l.p.Sprintf("%d", n) }
