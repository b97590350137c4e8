package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// slapd is Debian's OpenLDAP server on a temp dir, seeded with users in two groups. Anonymous
// search is denied by ACL, so cove must use its service account.
type slapd struct {
	url    string // ldap://
	ldaps  string // ldaps://, when started with TLS
	caFile string
}

const ldapSeed = `dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people

dn: ou=groups,dc=example,dc=org
objectClass: organizationalUnit
ou: groups

dn: cn=reader,dc=example,dc=org
objectClass: simpleSecurityObject
objectClass: organizationalRole
cn: reader
userPassword: ReaderPw1

dn: uid=alice,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Liddell
mail: alice@example.org
userPassword: AlicePw1x

dn: uid=bob,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: Builder
userPassword: BobPw1xyz

dn: uid=carol,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: carol
cn: Carol
sn: Admin
userPassword: CarolPw1x

dn: cn=devs,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: devs
member: uid=alice,ou=people,dc=example,dc=org

dn: cn=admins,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: admins
member: uid=carol,ou=people,dc=example,dc=org
`

func startSlapd(t *testing.T) *slapd { return startSlapdTLS(t, false) }

// authConfig is the auth section of a cove configuration that logs in against this directory
// with its read-only service account; keys of auth.ldap may follow (indented by four spaces).
func (sl *slapd) authConfig() string {
	return fmt.Sprintf(`auth:
  mode: ldap
  ldap:
    url: %s
    base_dn: ou=people,dc=example,dc=org
    user_filter: (uid=%%s)
    bind_dn: cn=reader,dc=example,dc=org
    bind_password: ReaderPw1
    group_base_dn: ou=groups,dc=example,dc=org
`, sl.url)
}

// startSlapdTLS starts slapd; with TLS it also listens for ldaps:// and offers StartTLS, with a
// server certificate for 127.0.0.1 from a CA of the test's own (caFile).
func startSlapdTLS(t *testing.T, withTLS bool) *slapd {
	t.Helper()
	bin := requireTool(t, "slapd")
	ldapadd := requireTool(t, "ldapadd")
	dir := shortDir(t, "ld")
	if err := os.MkdirAll(filepath.Join(dir, "db"), 0o700); err != nil {
		t.Fatal(err)
	}
	caFile := ""
	if withTLS {
		caFile = filepath.Join(dir, "ca.pem")
		cert, key := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
		writeTestCA(t, caFile, cert, key)
	}
	conf := fmt.Sprintf(`include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile %[1]s/slapd.pid
argsfile %[1]s/slapd.args
%[3]s
database mdb
suffix "dc=example,dc=org"
rootdn "cn=root,dc=example,dc=org"
rootpw RootPw1xyz
directory %[1]s/db
maxsize 104857600
overlay memberof
%[2]s
access to attrs=userPassword by self write by anonymous auth by * none
access to * by dn.exact="cn=reader,dc=example,dc=org" read by self read by anonymous auth by * none
`, dir, "", tlsGlobal(withTLS, dir))
	if err := os.WriteFile(filepath.Join(dir, "slapd.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	url := fmt.Sprintf("ldap://127.0.0.1:%d", port)
	listen := url + "/"
	sl := &slapd{url: url, caFile: caFile}
	if withTLS {
		sl.ldaps = fmt.Sprintf("ldaps://127.0.0.1:%d", freePort(t))
		listen += " " + sl.ldaps + "/"
	}
	startDaemon(t, filepath.Join(dir, "slapd.log"), bin, "-d", "0", "-h", listen, "-f", filepath.Join(dir, "slapd.conf"))
	seed := filepath.Join(dir, "seed.ldif")
	if err := os.WriteFile(seed, []byte(ldapSeed), 0o600); err != nil {
		t.Fatal(err)
	}
	var out string
	var err error
	waitFor(t, 20*time.Second, "slapd to take the seed", func() bool {
		out, err = run(t, 10*time.Second, nil, ldapadd, "-x", "-H", url, "-D", "cn=root,dc=example,dc=org", "-w", "RootPw1xyz", "-f", seed)
		return err == nil || strings.Contains(out, "Already exists")
	})
	return sl
}

func tlsGlobal(withTLS bool, dir string) string {
	if !withTLS {
		return ""
	}
	return fmt.Sprintf("TLSCACertificateFile %[1]s/ca.pem\nTLSCertificateFile %[1]s/server.pem\nTLSCertificateKeyFile %[1]s/server.key", dir)
}

// TestLDAPOverTLS: cove reaches the directory over ldaps:// and with StartTLS, trusting the CA
// given in ca_file, and refuses a directory whose certificate it cannot verify.
func TestLDAPOverTLS(t *testing.T) {
	ldap := startSlapdTLS(t, true)
	conf := func(url, extra string) string {
		return fmt.Sprintf(`auth:
  mode: ldap
  ldap:
    url: %s
    base_dn: ou=people,dc=example,dc=org
    bind_dn: cn=reader,dc=example,dc=org
    bind_password: ReaderPw1
%s`, url, extra)
	}
	for _, tc := range []struct {
		name, url, extra string
		ok               bool
	}{
		{"ldaps with ca_file", ldap.ldaps, "    ca_file: " + ldap.caFile + "\n", true},
		{"StartTLS with ca_file", ldap.url, "    start_tls: true\n    ca_file: " + ldap.caFile + "\n", true},
		{"ldaps, CA not trusted", ldap.ldaps, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startMirror(t, t.TempDir(), conf(tc.url, tc.extra))
			resp, _ := s.doAs("GET", "/service/token?service=cove", nil, "alice", "AlicePw1x")
			if (resp.StatusCode == 200) != tc.ok {
				t.Errorf("login over %s = %d, want success=%v", tc.name, resp.StatusCode, tc.ok)
			}
		})
	}
}

// regClient runs skopeo or podman with their own auth file.
type regClient struct {
	t        *testing.T
	authFile string
	env      []string
}

func newRegClient(t *testing.T) *regClient {
	dir := t.TempDir()
	return &regClient{t: t, authFile: filepath.Join(dir, "auth.json"), env: []string{"REGISTRY_AUTH_FILE=" + filepath.Join(dir, "auth.json")}}
}

func (c *regClient) run(tool string, args ...string) (string, error) {
	c.t.Helper()
	return run(c.t, 3*time.Minute, c.env, requireTool(c.t, tool), args...)
}

// TestSecurityEndToEnd: LDAP users (through a group membership) and local users log in with
// skopeo and podman, push and pull; roles, robots and anonymous access hold; injection attempts and
// empty passwords fail; every operation is in the audit log and no secret is in any log line.
func TestSecurityEndToEnd(t *testing.T) {
	requireTool(t, "skopeo")
	requireTool(t, "podman")
	ldap := startSlapd(t)
	s := startMirror(t, t.TempDir(), ldap.authConfig()+"    admin_group: cn=admins,ou=groups,dc=example,dc=org\n")
	s.createProject("team", false)
	s.createProject("open", true)
	api := func(method, path, body, user, pass string) (int, string) {
		req := strings.NewReader(body)
		resp, b := s.doAs(method, path, req, user, pass)
		return resp.StatusCode, string(b)
	}
	if code, b := api("POST", "/api/v2.0/projects/team/members", `{"role_id":2,"member_group":{"group_name":"devs"}}`, "admin", adminPassword); code != 201 {
		t.Fatalf("add group devs = %d %s", code, b)
	}
	if code, b := api("POST", "/api/v2.0/users", `{"username":"dave","email":"d@example.org","password":"DavePw1xyz"}`, "admin", adminPassword); code != 201 {
		t.Fatalf("create local user = %d %s", code, b)
	}
	if code, b := api("POST", "/api/v2.0/projects/team/members", `{"role_id":2,"member_user":{"username":"dave"}}`, "admin", adminPassword); code != 201 {
		t.Fatalf("add dave = %d %s", code, b)
	}
	img := ociImage(t, 2, 64<<10, nil)
	src := writeLayout(t, img, newOCIIndex(t))
	reg := s.addr

	// alice (LDAP, in devs → developer) logs in with skopeo, pushes and pulls.
	alice := newRegClient(t)
	if out, err := alice.run("skopeo", "login", "--tls-verify=false", "-u", "alice", "-p", "AlicePw1x", reg); err != nil {
		t.Fatalf("skopeo login alice: %v\n%s", err, out)
	}
	if out, err := alice.run("skopeo", "copy", "--dest-tls-verify=false", "oci:"+src+":v1", "docker://"+reg+"/team/app:v1"); err != nil {
		t.Fatalf("alice pushes: %v\n%s", err, out)
	}
	if out, err := alice.run("skopeo", "inspect", "--tls-verify=false", "docker://"+reg+"/team/app:v1"); err != nil {
		t.Fatalf("alice pulls: %v\n%s", err, out)
	}
	// dave (local user) logs in with podman and pulls; pushes with skopeo through podman's login.
	dave := newRegClient(t)
	d := shortDir(t, "pd")
	pargs := []string{"--root", filepath.Join(d, "root"), "--runroot", filepath.Join(d, "run"), "--storage-driver", "vfs"}
	if out, err := dave.run("podman", append(pargs, "login", "--tls-verify=false", "--authfile", dave.authFile, "-u", "dave", "-p", "DavePw1xyz", reg)...); err != nil {
		t.Fatalf("podman login dave: %v\n%s", err, out)
	}
	if out, err := dave.run("podman", append(pargs, "pull", "--tls-verify=false", "--authfile", dave.authFile, reg+"/team/app:v1")...); err != nil {
		t.Fatalf("dave pulls with podman: %v\n%s", err, out)
	}
	if out, err := dave.run("skopeo", "copy", "--dest-tls-verify=false", "oci:"+src+":v1", "docker://"+reg+"/team/app:dave"); err != nil {
		t.Fatalf("dave pushes: %v\n%s", err, out)
	}
	// bob (LDAP, no group) may not push to team; carol (admins group) may do anything.
	bob := newRegClient(t)
	if out, err := bob.run("skopeo", "login", "--tls-verify=false", "-u", "bob", "-p", "BobPw1xyz", reg); err != nil {
		t.Fatalf("skopeo login bob: %v\n%s", err, out)
	}
	if out, err := bob.run("skopeo", "copy", "--dest-tls-verify=false", "oci:"+src+":v1", "docker://"+reg+"/team/app:bob"); err == nil {
		t.Errorf("bob, in no group, pushed to team:\n%s", out)
	}
	if code, b := api("POST", "/api/v2.0/projects", `{"project_name":"carols"}`, "carol", "CarolPw1x"); code != 201 {
		t.Errorf("carol (LDAP admin group) creates a project = %d %s", code, b)
	}
	if code, b := api("GET", "/api/v2.0/audit-logs", "", "carol", "CarolPw1x"); code != 200 {
		t.Errorf("carol reads the audit log = %d %s", code, b)
	}

	// Login attacks: LDAP filter injection, empty password, wrong password.
	for _, tc := range []struct{ user, pass string }{{"*)(uid=*", "AlicePw1x"}, {"*", "AlicePw1x"}, {"alice", ""}, {"alice", "wrong"}, {"alice)(|(uid=*", "x"}} {
		resp, _ := s.doAs("GET", "/service/token?service=cove&scope=repository:team/app:pull", nil, tc.user, tc.pass)
		if resp.StatusCode != 401 && !(tc.pass == "" && resp.StatusCode == 200) {
			t.Errorf("token for %q/%q = %d, want 401", tc.user, tc.pass, resp.StatusCode)
		}
		if tc.pass == "" && resp.StatusCode == 200 {
			// Empty Basic credentials are anonymous; the token must grant nothing on the private project.
			tokenResp, body := s.doAs("GET", "/service/token?service=cove&scope=repository:team/app:pull", nil, tc.user, tc.pass)
			var tok struct{ Token string }
			json.Unmarshal(body, &tok)
			_ = tokenResp
			r2, _ := s.doBearer("GET", "/v2/team/app/manifests/v1", tok.Token)
			if r2.StatusCode != 401 {
				t.Errorf("an empty password reached a private repository: %d", r2.StatusCode)
			}
		}
	}

	// A robot pushes and pulls within its project only.
	code, b := api("POST", "/api/v2.0/robots", `{"name":"ci","duration":-1,"level":"project","permissions":[{"kind":"project","namespace":"team","access":[{"resource":"repository","action":"pull"},{"resource":"repository","action":"push"}]}]}`, "admin", adminPassword)
	var robot struct{ Name, Secret string }
	json.Unmarshal([]byte(b), &robot)
	if code != 201 || robot.Secret == "" {
		t.Fatalf("create robot = %d %s", code, b)
	}
	rc := newRegClient(t)
	creds := robot.Name + ":" + robot.Secret
	if out, err := rc.run("skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", creds, "oci:"+src+":v1", "docker://"+reg+"/team/robot:v1"); err != nil {
		t.Errorf("robot pushes to its project: %v\n%s", err, out)
	}
	if out, err := rc.run("skopeo", "inspect", "--tls-verify=false", "--creds", creds, "docker://"+reg+"/team/robot:v1"); err != nil {
		t.Errorf("robot pulls: %v\n%s", err, out)
	}
	if out, err := rc.run("skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", creds, "oci:"+src+":v1", "docker://"+reg+"/open/robot:v1"); err == nil {
		t.Errorf("robot pushed outside its project:\n%s", out)
	}

	// Anonymous: a public project pulls, a private one does not.
	if out, err := alice.run("skopeo", "copy", "--dest-tls-verify=false", "oci:"+src+":v1", "docker://"+reg+"/open/app:v1"); err == nil {
		t.Errorf("alice (no role in open) pushed to open:\n%s", out)
	}
	if out, err := rc.run("skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", "admin:"+adminPassword, "oci:"+src+":v1", "docker://"+reg+"/open/app:v1"); err != nil {
		t.Fatalf("admin pushes to open: %v\n%s", err, out)
	}
	anon := newRegClient(t)
	if out, err := anon.run("skopeo", "inspect", "--tls-verify=false", "--no-creds", "docker://"+reg+"/open/app:v1"); err != nil {
		t.Errorf("anonymous pull of a public project: %v\n%s", err, out)
	}
	if out, err := anon.run("skopeo", "inspect", "--tls-verify=false", "--no-creds", "docker://"+reg+"/team/app:v1"); err == nil {
		t.Errorf("anonymous pull of a private project succeeded:\n%s", out)
	}

	// The audit log has every kind of operation above.
	for _, q := range []string{
		"operation=login,username=alice,result=success", "operation=login,username=bob,result=success",
		"operation=login,result=failure", "operation=token,username=alice", "operation=push,username=alice",
		"operation=pull,username=dave", "operation=push,username=" + robot.Name, "operation=create,resource_type=member",
		"operation=create,resource_type=user", "operation=create,resource_type=robot", "operation=create,resource_type=project",
	} {
		code, b := api("GET", "/api/v2.0/audit-logs?q="+url.QueryEscape(q), "", "admin", adminPassword)
		var events []map[string]any
		json.Unmarshal([]byte(b), &events)
		if code != 200 || len(events) == 0 {
			t.Errorf("no audit record for %s (%d %s)", q, code, b)
		}
	}
	// No secret in any log line: no password, no token (a JWT starts "eyJ").
	if strings.Contains(s.log(), "eyJ") {
		t.Error("a token appears in cove's log")
	}
	for _, secret := range []string{"AlicePw1x", "BobPw1xyz", "CarolPw1x", "DavePw1xyz", "ReaderPw1", robot.Secret, adminPassword} {
		if strings.Contains(s.log(), secret) {
			t.Errorf("a secret appears in cove's log")
		}
	}
}

// doAs sends a request with Basic credentials (none when user is empty).
func (s *server) doAs(method, path string, body *strings.Reader, user, pass string) (*httpResponse, []byte) {
	s.t.Helper()
	var rd = body
	if rd == nil {
		rd = strings.NewReader("")
	}
	req, err := newRequest(method, s.url+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if user != "" || pass != "" {
		req.SetBasicAuth(user, pass)
	}
	return doRequest(s.t, req)
}

func (s *server) doBearer(method, path, token string) (*httpResponse, []byte) {
	s.t.Helper()
	req, err := newRequest(method, s.url+path, strings.NewReader(""))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return doRequest(s.t, req)
}

var _ = exec.Command

// Behind a reverse proxy listed in trusted_proxies, the failed-login limits and the audit log
// take the client's address from X-Forwarded-For: a client with a stale secret behind the proxy
// locks out only itself, not every client of the proxy; a peer that is no trusted proxy cannot
// choose its address by sending the header.
func TestTrustedProxy(t *testing.T) {
	s := startCove(t, t.TempDir(), "COVE_TRUSTED_PROXIES=127.0.0.1")
	token := func(pass, xff string) int {
		t.Helper()
		req, err := newRequest("GET", s.url+"/service/token?service=cove&scope=repository:library/x:pull", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth("admin", pass)
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		resp, _ := doRequest(t, req)
		return resp.StatusCode
	}
	const stale, colleague = "203.0.113.1", "203.0.113.2"
	for i := range 10 {
		if code := token(fmt.Sprintf("stale%d", i), stale); code != 401 {
			t.Fatalf("wrong password %d = %d, want 401", i, code)
		}
	}
	if code := token(adminPassword, stale); code != 429 {
		t.Errorf("the right password from the client that failed = %d, want 429", code)
	}
	if code := token(adminPassword, colleague); code != 200 {
		t.Errorf("the right password from another client of the proxy = %d, want 200", code)
	}
	resp, b := s.doAs("GET", "/api/v2.0/audit-logs?q=operation%3Dlogin&page_size=100", nil, "admin", adminPassword)
	if resp.StatusCode != 200 || !strings.Contains(string(b), stale) {
		t.Errorf("the audit log does not name the client behind the proxy: %d %.400s", resp.StatusCode, b)
	}

	// A peer that is no trusted proxy is its own address, whatever it sends.
	direct := startCove(t, t.TempDir())
	for i := range 10 {
		req, _ := newRequest("GET", direct.url+"/service/token?service=cove", nil)
		req.SetBasicAuth("admin", fmt.Sprintf("stale%d", i))
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("203.0.113.%d", 10+i))
		doRequest(t, req)
	}
	req, _ := newRequest("GET", direct.url+"/service/token?service=cove", nil)
	req.SetBasicAuth("admin", adminPassword)
	req.Header.Set("X-Forwarded-For", "203.0.113.99")
	if resp, _ := doRequest(t, req); resp.StatusCode != 429 {
		t.Errorf("a direct client changing X-Forwarded-For escaped its limit: %d, want 429", resp.StatusCode)
	}
}
