package admin

import (
	"fmt"
	"net/http"
	"regexp"
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

// Time writes a time to the second, in UTC, as ISO 8601 has it in both languages: the audit log
// is read to the second (two failed logins within one minute are two lines), and the same form
// sorts and compares across pages.
func (l locale) Time(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format(timeLayout)
}

// timeLayout is the page's time format; app.js writes the times it adds the same way.
const timeLayout = "2006-01-02 15:04:05 UTC"

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

// apiMessages are the error messages of the API that the page translates. The API answers in
// English, as Harbor's does, for tools; the page shows the visitor's language. Each pattern
// matches the English message, and its groups are the arguments of the key's text (each a %s).
// The first match wins; a message no pattern knows falls back to its status (apiStatusKey).
var apiMessages = []struct {
	re  *regexp.Regexp
	key string
}{
	{regexp.MustCompile(`^unauthorized$`), "apierr.unauthorized"},
	{regexp.MustCompile(`^forbidden$`), "apierr.forbidden"},
	{regexp.MustCompile(`^project not found$`), "apierr.project.notfound"},
	{regexp.MustCompile(`^a project with that name exists already$`), "apierr.project.exists"},
	{regexp.MustCompile(`^invalid value: project name (".*") must be lower-case letters and digits`), "apierr.project.name"},
	{regexp.MustCompile(`^invalid value: (".*") names an upstream registry and cannot name a project$`), "apierr.project.reserved"},
	{regexp.MustCompile(`^only system admins create projects`), "apierr.project.adminonly"},
	{regexp.MustCompile(`^repositories of a former project (\S+) remain; they must be removed first$`), "apierr.project.leftover"},
	{regexp.MustCompile(`^project (\S+) still has (\d+) repositories; delete them first$`), "apierr.project.notempty"},
	{regexp.MustCompile(`^invalid value: a password needs\D*(\d+)\D+(\d+)`), "apierr.password.policy"}, // the least and the most
	{regexp.MustCompile(`^the old password is wrong$`), "apierr.password.old"},
	{regexp.MustCompile(`^invalid value: (\S+) is an LDAP user; the directory holds the password$`), "apierr.password.ldap"},
	{regexp.MustCompile(`^invalid value: user name (".*")$`), "apierr.user.name"},
	{regexp.MustCompile(`^already exists: user (\S+)$`), "apierr.user.exists"},
	{regexp.MustCompile(`^not found: user (\S+)$`), "apierr.user.notfound"},
	{regexp.MustCompile(`^this user cannot be deleted$`), "apierr.user.undeletable"},
	{regexp.MustCompile(`^the built-in admin stays an admin$`), "apierr.user.builtin"},
	{regexp.MustCompile(`^already exists: (.+) is a member of (\S+) already$`), "apierr.member.exists"},
	{regexp.MustCompile(`^invalid value: a group member needs a group name$`), "apierr.member.group"},
	{regexp.MustCompile(`^invalid value: role (-?\d+) is not one of`), "apierr.member.role"},
	{regexp.MustCompile(`^not found: member (\d+) of (\S+)$`), "apierr.member.notfound"},
	{regexp.MustCompile(`^member_user or member_group is required$`), "apierr.member.required"},
	{regexp.MustCompile(`^already exists: robot (\S+)$`), "apierr.robot.exists"},
	{regexp.MustCompile(`^invalid value: robot name (".*")$`), "apierr.robot.name"},
	{regexp.MustCompile(`^invalid value: a robot needs at least one permission$`), "apierr.robot.permission"},
	{regexp.MustCompile(`^not found: robot (\d+)$`), "apierr.robot.notfound"},
	{regexp.MustCompile(`^no such cached repository$`), "apierr.mirror.notcached"},
	{regexp.MustCompile(`^name must be a cached upstream repository`), "apierr.mirror.name"},
	{regexp.MustCompile(`^invalid value: self-registration is off with LDAP`), "apierr.settings.selfreg"},
	{regexp.MustCompile(`^invalid value: (anonymous_pull|project_creation_restriction) must be`), "apierr.settings.value"},
	{regexp.MustCompile(`^too many failed logins`), "apierr.toomany"},
	{regexp.MustCompile(`^the user directory cannot be reached$`), "apierr.directory"},
	{regexp.MustCompile(`^invalid JSON body`), "apierr.body"},
	{regexp.MustCompile(`^invalid value: the password reset link is not valid: it was used already`), "apierr.reset.used"},
	{regexp.MustCompile(`^invalid value: the password reset link is not valid: it expired`), "apierr.reset.expired"},
	{regexp.MustCompile(`^invalid value: the password reset link is not valid`), "apierr.reset.invalid"},
	{regexp.MustCompile(`^password reset by e-mail is not set up`), "forgot.unavailable"},
	{regexp.MustCompile(`^internal server error$`), "apierr.internal"},
}

// apiStatusKey is the key of the sentence that says what a status means, for a message no
// pattern knows.
func apiStatusKey(status int) string {
	switch {
	case status == http.StatusBadRequest:
		return "apierr.status.badrequest"
	case status == http.StatusUnauthorized:
		return "apierr.unauthorized"
	case status == http.StatusForbidden:
		return "apierr.forbidden"
	case status == http.StatusNotFound:
		return "apierr.status.notfound"
	case status == http.StatusConflict:
		return "apierr.status.conflict"
	case status == http.StatusPreconditionFailed:
		return "apierr.status.precondition"
	case status == http.StatusTooManyRequests:
		return "apierr.toomany"
	case status == http.StatusServiceUnavailable:
		return "apierr.status.unavailable"
	case status >= 500:
		return "apierr.internal"
	}
	return "apierr.status.other"
}

// apiMessageKey finds the key and arguments of an API error message; ok is false for a message
// no pattern knows.
func apiMessageKey(msg string) (key string, args []any, ok bool) {
	for _, m := range apiMessages {
		if g := m.re.FindStringSubmatch(msg); g != nil {
			for _, a := range g[1:] {
				args = append(args, a)
			}
			return m.key, args, true
		}
	}
	return "", nil, false
}

// APIMessage writes an error of the API (its HTTP status and English message) in the language.
// A message no pattern knows is written as what its status means, with the message itself in
// brackets: what it says is kept, even if untranslated.
func (l locale) APIMessage(status int, msg string) string {
	if key, args, ok := apiMessageKey(msg); ok {
		return l.T(key, args...)
	}
	text := l.T(apiStatusKey(status))
	if apiStatusKey(status) == "apierr.status.other" {
		text = l.T("apierr.status.other", status)
	}
	if msg == "" {
		return text
	}
	return l.T("apierr.detail", text, msg)
}
