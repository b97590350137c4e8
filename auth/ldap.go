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
// for exactly one entry, then a bind as that entry (docs/SECURITY.md 9; RFC 4513). Every step has a
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
	conn, err := d.connect()
	if err != nil {
		return ldapEntry{}, err
	}
	defer conn.Close()
	entry, err := d.findUser(conn, user)
	if err != nil {
		return ldapEntry{}, err
	}
	if err := conn.Bind(entry.DN, pass); err != nil {
		if ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
			return ldapEntry{}, ErrBadCredentials
		}
		return ldapEntry{}, fmt.Errorf("%w: bind as user: %v", ErrDirectoryUnavailable, err)
	}
	// Search the groups as the service account again: the user may not read them.
	if err := d.serviceBind(conn); err != nil {
		return ldapEntry{}, err
	}
	return d.groups(conn, entry)
}

// connect dials the directory (TLS verified against ca_file), upgrades with StartTLS when
// configured, and binds as the service account.
func (d *ldapDirectory) connect() (*ldap.Conn, error) {
	conn, err := ldap.DialURL(d.cfg.URL,
		ldap.DialWithDialer(&net.Dialer{Timeout: d.cfg.Timeout}), ldap.DialWithTLSConfig(d.tls))
	if err != nil {
		return nil, fmt.Errorf("%w: connect: %v", ErrDirectoryUnavailable, err)
	}
	conn.SetTimeout(d.cfg.Timeout)
	if d.cfg.StartTLS {
		if err := conn.StartTLS(d.tls); err != nil {
			conn.Close()
			return nil, fmt.Errorf("%w: StartTLS: %v", ErrDirectoryUnavailable, err)
		}
	}
	if err := d.serviceBind(conn); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func (d *ldapDirectory) serviceBind(conn *ldap.Conn) error {
	if d.cfg.BindDN == "" {
		return nil
	}
	if err := conn.Bind(d.cfg.BindDN, d.cfg.BindPassword); err != nil {
		return fmt.Errorf("%w: service bind: %v", ErrDirectoryUnavailable, err)
	}
	return nil
}

// findUser searches for exactly one entry matching the escaped user name. A size limit reached
// means several matched: refused as well.
func (d *ldapDirectory) findUser(conn *ldap.Conn, user string) (*ldap.Entry, error) {
	filter := fmt.Sprintf(d.cfg.UserFilter, ldap.EscapeFilter(user))
	res, err := conn.Search(ldap.NewSearchRequest(d.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		2, int(d.cfg.Timeout/time.Second), false, filter, []string{"dn", "mail", "memberOf"}, nil))
	if ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
		return nil, fmt.Errorf("%w: several directory entries match", ErrBadCredentials)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: search: %v", ErrDirectoryUnavailable, err)
	}
	if len(res.Entries) != 1 {
		return nil, fmt.Errorf("%w: not exactly one directory entry for the user", ErrBadCredentials)
	}
	return res.Entries[0], nil
}

// groups returns the entry with its groups: memberOf, and the groups under group_base_dn that name
// it as member. A group is known by its DN, and also by its cn when it lies under group_base_dn
// (so that "devs" can name a project member), never by a bare cn from elsewhere.
func (d *ldapDirectory) groups(conn *ldap.Conn, entry *ldap.Entry) (ldapEntry, error) {
	out := ldapEntry{DN: entry.DN, Email: entry.GetAttributeValue("mail")}
	groups := entry.GetAttributeValues("memberOf")
	if d.cfg.GroupBaseDN != "" {
		gres, err := conn.Search(ldap.NewSearchRequest(d.cfg.GroupBaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
			1000, int(d.cfg.Timeout/time.Second), false, fmt.Sprintf(d.cfg.GroupFilter, ldap.EscapeFilter(entry.DN)), []string{"dn"}, nil))
		if err != nil {
			return ldapEntry{}, fmt.Errorf("%w: group search: %v", ErrDirectoryUnavailable, err)
		}
		for _, g := range gres.Entries {
			groups = append(groups, g.DN)
		}
	}
	base, _ := ldap.ParseDN(d.cfg.GroupBaseDN)
	for _, g := range groups {
		if !slices.Contains(out.Groups, g) {
			out.Groups = append(out.Groups, g)
		}
		if dn, err := ldap.ParseDN(g); err == nil && base != nil && len(base.RDNs) > 0 && base.AncestorOf(dn) {
			if cn := groupCN(g); cn != "" && !slices.Contains(out.Groups, cn) {
				out.Groups = append(out.Groups, cn)
			}
		}
	}
	return out, nil
}

// lookup finds user's entry and groups with the service account, without the user's password:
// for refresh tokens, so that the directory still decides.
func (d *ldapDirectory) lookup(ctx context.Context, user string) (ldapEntry, error) {
	conn, err := d.connect()
	if err != nil {
		return ldapEntry{}, err
	}
	defer conn.Close()
	entry, err := d.findUser(conn, user)
	if err != nil {
		return ldapEntry{}, err
	}
	return d.groups(conn, entry)
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

// sameDN compares a group (a DN, or a cn listed for a group under group_base_dn) with the admin
// group as configured (a DN or a cn): DNs as DNs, anything else exactly.
func sameDN(a, b string) bool {
	da, errA := ldap.ParseDN(a)
	db, errB := ldap.ParseDN(b)
	if errA == nil && errB == nil && len(da.RDNs) > 0 && len(db.RDNs) > 0 {
		return da.Equal(db)
	}
	return a == b
}

// ldapLogin checks a password against the directory, creates the user in cove at its first
// login, and returns the principal with its groups; members of the admin group are system admins.
func (i *Identity) ldapLogin(ctx context.Context, user, pass string) (Principal, error) {
	entry, err := i.ldap.login(ctx, user, pass)
	if err != nil {
		if errors.Is(err, ErrDirectoryUnavailable) {
			i.log.WarnContext(ctx, "LDAP login could not be checked", "user", user, "err", err)
		}
		return Principal{}, err
	}
	return i.ldapUser(ctx, user, entry)
}

// ldapRefresh re-reads a directory user for a refresh token: still there, with its groups now.
func (i *Identity) ldapRefresh(ctx context.Context, user string) (Principal, error) {
	entry, err := i.ldap.lookup(ctx, user)
	if err != nil {
		return Principal{}, err
	}
	return i.ldapUser(ctx, user, entry)
}

// ldapUser records what the directory says of user and returns the principal. The admin group
// is matched by its full DN, or by its cn when the group lies under group_base_dn.
func (i *Identity) ldapUser(ctx context.Context, user string, entry ldapEntry) (Principal, error) {
	admin := i.ldap.cfg.AdminGroup != "" && slices.ContainsFunc(entry.Groups, func(g string) bool {
		return sameDN(g, i.ldap.cfg.AdminGroup)
	})
	if _, err := i.User(ctx, user); errors.Is(err, ErrNotFound) {
		if _, err := i.insertUser(User{Name: user, Email: entry.Email, LDAP: true}, nil); err != nil && !errors.Is(err, ErrConflict) {
			return Principal{}, err
		}
	}
	var who Principal
	err := i.writeUser(user, func(r *userRecord) error {
		if !r.LDAP {
			return fmt.Errorf("%w: %s is a local user", ErrBadCredentials, user)
		}
		r.Groups, r.GroupAdmin = entry.Groups, admin
		who = r.principal()
		return nil
	})
	return who, err
}

// ErrNoDirectory means no LDAP directory is configured (auth.mode is not ldap).
var ErrNoDirectory = errors.New("no LDAP directory is configured (auth.mode: ldap)")

// LDAPMode reports whether passwords are checked against an LDAP directory.
func (i *Identity) LDAPMode() bool { return i.ldap != nil }

// PingLDAP connects to the configured directory and binds as its service account: the check of
// Harbor's POST /ldap/ping. ErrNoDirectory without one.
func (i *Identity) PingLDAP(ctx context.Context) error {
	if i.ldap == nil {
		return ErrNoDirectory
	}
	conn, err := i.ldap.connect()
	if err != nil {
		return err
	}
	return conn.Close()
}
