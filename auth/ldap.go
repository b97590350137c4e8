package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// LDAPConfig configures the directory of auth.mode: ldap.
type LDAPConfig struct {
	URL          string // ldap://host:389 or ldaps://host:636
	BaseDN       string // where users are searched
	UserFilter   string // with one %s for the escaped user name, e.g. (uid=%s)
	BindDN       string // the service account that searches; empty: anonymous search
	BindPassword string
	GroupBaseDN  string // where groups are searched for the user's DN as member; empty: memberOf only
	GroupFilter  string // with one %s for the escaped user DN; default (member=%s)
	AdminGroup   string // members of this group (DN or cn) are system admins
	CAFile       string // PEM bundle to trust for ldaps:// and StartTLS
	StartTLS     bool   // upgrade an ldap:// connection before anything is sent
	Timeout      time.Duration
}

// ldapDirectory checks passwords against the directory: service bind, an escaped filter search
// for exactly one entry, then a bind as that entry (SECURITY.md 9; RFC 4513). Every step has a
// time limit; there is no lock around logins, each has its own connection.
type ldapDirectory struct {
	cfg LDAPConfig
	tls *tls.Config
}

func newLDAPDirectory(cfg LDAPConfig) (*ldapDirectory, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") {
		return nil, fmt.Errorf("ldap url %q: want ldap:// or ldaps://", cfg.URL)
	}
	if strings.Count(cfg.UserFilter, "%s") != 1 {
		return nil, fmt.Errorf("ldap user_filter %q: want exactly one %%s", cfg.UserFilter)
	}
	if cfg.GroupFilter == "" {
		cfg.GroupFilter = "(member=%s)"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	d := &ldapDirectory{cfg: cfg, tls: &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ldap ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ldap ca_file %s: no certificate in it", cfg.CAFile)
		}
		d.tls.RootCAs = pool
	}
	return d, nil
}

// ldapEntry is what a successful directory login yields.
type ldapEntry struct {
	DN     string
	Email  string
	Groups []string // DNs and cns
}

// login binds as user with pass and returns the entry and its groups. A wrong password, an empty
// one (which would be an unauthenticated bind that succeeds), no entry or several entries: all are
// ErrBadCredentials.
func (d *ldapDirectory) login(ctx context.Context, user, pass string) (ldapEntry, error) {
	if pass == "" || user == "" {
		return ldapEntry{}, ErrBadCredentials
	}
	conn, err := ldap.DialURL(d.cfg.URL,
		ldap.DialWithDialer(&net.Dialer{Timeout: d.cfg.Timeout}), ldap.DialWithTLSConfig(d.tls))
	if err != nil {
		return ldapEntry{}, fmt.Errorf("ldap: connect: %w", err)
	}
	defer conn.Close()
	conn.SetTimeout(d.cfg.Timeout)
	if d.cfg.StartTLS {
		if err := conn.StartTLS(d.tls); err != nil {
			return ldapEntry{}, fmt.Errorf("ldap: StartTLS: %w", err)
		}
	}
	if d.cfg.BindDN != "" {
		if err := conn.Bind(d.cfg.BindDN, d.cfg.BindPassword); err != nil {
			return ldapEntry{}, fmt.Errorf("ldap: service bind: %w", err)
		}
	}
	filter := fmt.Sprintf(d.cfg.UserFilter, ldap.EscapeFilter(user))
	res, err := conn.Search(ldap.NewSearchRequest(d.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		2, int(d.cfg.Timeout/time.Second), false, filter, []string{"dn", "mail", "memberOf"}, nil))
	if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
		return ldapEntry{}, fmt.Errorf("ldap: search: %w", err)
	}
	if res == nil || len(res.Entries) != 1 {
		return ldapEntry{}, fmt.Errorf("%w: not exactly one directory entry for the user", ErrBadCredentials)
	}
	entry := res.Entries[0]
	if err := conn.Bind(entry.DN, pass); err != nil {
		if ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
			return ldapEntry{}, ErrBadCredentials
		}
		return ldapEntry{}, fmt.Errorf("ldap: bind as user: %w", err)
	}
	out := ldapEntry{DN: entry.DN, Email: entry.GetAttributeValue("mail")}
	groups := entry.GetAttributeValues("memberOf")
	if d.cfg.GroupBaseDN != "" {
		// Search the groups as the service account again: the user may not read them.
		if d.cfg.BindDN != "" {
			if err := conn.Bind(d.cfg.BindDN, d.cfg.BindPassword); err != nil {
				return ldapEntry{}, fmt.Errorf("ldap: service bind: %w", err)
			}
		}
		gres, err := conn.Search(ldap.NewSearchRequest(d.cfg.GroupBaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
			1000, int(d.cfg.Timeout/time.Second), false, fmt.Sprintf(d.cfg.GroupFilter, ldap.EscapeFilter(entry.DN)), []string{"dn"}, nil))
		if err != nil {
			return ldapEntry{}, fmt.Errorf("ldap: group search: %w", err)
		}
		for _, g := range gres.Entries {
			groups = append(groups, g.DN)
		}
	}
	for _, g := range groups {
		if !slices.Contains(out.Groups, g) {
			out.Groups = append(out.Groups, g)
		}
		if cn := groupCN(g); cn != "" && !slices.Contains(out.Groups, cn) {
			out.Groups = append(out.Groups, cn)
		}
	}
	return out, nil
}

// groupCN returns the cn of a group DN ("cn=devs,ou=groups,…" → "devs").
func groupCN(dn string) string {
	parsed, err := ldap.ParseDN(dn)
	if err != nil || len(parsed.RDNs) == 0 {
		return ""
	}
	for _, a := range parsed.RDNs[0].Attributes {
		if strings.EqualFold(a.Type, "cn") {
			return a.Value
		}
	}
	return ""
}

// ldapLogin checks a password against the directory, creates the user in cove at its first
// login, and returns the principal with its groups; members of the admin group are system admins.
func (s *Service) ldapLogin(ctx context.Context, user, pass string) (Principal, error) {
	entry, err := s.ldap.login(ctx, user, pass)
	if err != nil {
		if !errors.Is(err, ErrBadCredentials) {
			s.log.WarnContext(ctx, "LDAP login failed", "user", user, "err", err)
			return Principal{}, fmt.Errorf("%w: directory unavailable", ErrBadCredentials)
		}
		return Principal{}, err
	}
	admin := s.ldap.cfg.AdminGroup != "" && slices.ContainsFunc(entry.Groups, func(g string) bool {
		return strings.EqualFold(g, s.ldap.cfg.AdminGroup)
	})
	if _, err := s.User(ctx, user); errors.Is(err, ErrNotFound) {
		if _, err := s.insertUser(User{Name: user, Email: entry.Email, LDAP: true}, nil); err != nil && !errors.Is(err, ErrConflict) {
			return Principal{}, err
		}
	}
	var who Principal
	err = s.updateUser(user, func(r *userRecord) error {
		if !r.LDAP {
			return fmt.Errorf("%w: %s is a local user", ErrBadCredentials, user)
		}
		r.Groups, r.GroupAdmin = entry.Groups, admin
		who = r.principal()
		return nil
	})
	return who, err
}
