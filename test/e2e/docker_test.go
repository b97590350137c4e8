package e2e

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDockerLoginEveryIdentity: with the Docker CLI and dockerd, what most users have, the
// admin, a local user, an LDAP user and a robot each log in, push and pull (a robot's docker
// login was a 500: dockerd asks for a refresh token, which robots do not get). A push to a project
// that does not exist says so. No request answers 5xx, and every token leaves an audit record
// of what it granted.
func TestDockerLoginEveryIdentity(t *testing.T) {
	dockerd := requireTool(t, "dockerd")
	docker := requireTool(t, "docker")
	requireTool(t, "containerd")
	ldap := startSlapd(t)
	reg := startRegistry(t, "", nil)
	runtimeImages(t, reg)
	s := startMirror(t, t.TempDir(), mirrorConfig(reg.url, ldap.authConfig()))
	s.createProject("team", false)
	api := func(method, path, body string) string {
		t.Helper()
		resp, b := s.doAs(method, path, strings.NewReader(body), "admin", adminPassword)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s = %d %s", method, path, resp.StatusCode, b)
		}
		return string(b)
	}
	api("POST", "/api/v2.0/users", `{"username":"dave","email":"d@example.org","password":"DavePw1xyz"}`)
	api("POST", "/api/v2.0/projects/team/members", `{"role_id":2,"member_user":{"username":"dave"}}`)
	api("POST", "/api/v2.0/projects/team/members", `{"role_id":2,"member_group":{"group_name":"devs"}}`)
	var robot struct{ Name, Secret string }
	json.Unmarshal([]byte(api("POST", "/api/v2.0/robots", `{"name":"ci","duration":-1,"level":"project","permissions":[{"kind":"project","namespace":"team","access":[{"resource":"repository","action":"pull"},{"resource":"repository","action":"push"}]}]}`)), &robot)
	if robot.Secret == "" {
		t.Fatal("no robot secret")
	}

	d, sock := startDockerd(t, dockerd, docker, s.url)
	if out, err := run(t, 3*time.Minute, nil, docker, "-H", sock, "pull", "alpine"); err != nil {
		t.Fatalf("docker pull alpine through the mirror: %v\n%s", err, out)
	}
	pushed := regexp.MustCompile(`digest: (sha256:[0-9a-f]{64})`)
	for _, id := range []struct{ label, user, pass string }{
		{"admin", "admin", adminPassword},
		{"local", "dave", "DavePw1xyz"},
		{"ldap", "alice", "AlicePw1x"},
		{"robot", robot.Name, robot.Secret},
	} {
		t.Run(id.label, func(t *testing.T) {
			client := filepath.Join(d, "client-"+id.label)
			dk := func(limit time.Duration, args ...string) (string, error) {
				return run(t, limit, nil, docker, append([]string{"-H", sock, "--config", client}, args...)...)
			}
			login := exec.Command(docker, "-H", sock, "--config", client, "login", "-u", id.user, "--password-stdin", s.addr)
			login.Stdin = strings.NewReader(id.pass)
			if out, err := login.CombinedOutput(); err != nil || !strings.Contains(string(out), "Login Succeeded") {
				t.Fatalf("docker login as %s: %v\n%s", id.user, err, out)
			}
			target := s.addr + "/team/" + id.label + ":v1"
			if out, err := dk(time.Minute, "tag", "alpine", target); err != nil {
				t.Fatalf("docker tag: %v\n%s", err, out)
			}
			out, err := dk(3*time.Minute, "push", target)
			m := pushed.FindStringSubmatch(out)
			if err != nil || m == nil {
				t.Fatalf("docker push as %s: %v\n%s", id.user, err, out)
			}
			if out, err := dk(time.Minute, "rmi", target); err != nil {
				t.Fatalf("docker rmi: %v\n%s", err, out)
			}
			out, err = dk(3*time.Minute, "pull", target)
			if got := digestLine.FindStringSubmatch(out); err != nil || got == nil || got[1] != m[1] {
				t.Fatalf("docker pull as %s: %v, digest %v, want %s\n%s", id.user, err, got, m[1], out)
			}
			// Without a login, the private project is closed.
			if out, err := dk(time.Minute, "logout", s.addr); err != nil {
				t.Fatalf("docker logout: %v\n%s", err, out)
			}
			dk(time.Minute, "rmi", target)
			if out, err := dk(3*time.Minute, "pull", target); err == nil {
				t.Errorf("docker pull of a private image after logout succeeded:\n%s", out)
			}
		})
	}

	// A push to a project that does not exist names the project and how to create it.
	target := s.addr + "/nosuch/app:v1"
	login := exec.Command(docker, "-H", sock, "--config", filepath.Join(d, "client-admin"), "login", "-u", "admin", "--password-stdin", s.addr)
	login.Stdin = strings.NewReader(adminPassword)
	if out, err := login.CombinedOutput(); err != nil {
		t.Fatalf("docker login: %v\n%s", err, out)
	}
	run(t, time.Minute, nil, docker, "-H", sock, "tag", "alpine", target)
	out, err := run(t, 3*time.Minute, nil, docker, "-H", sock, "--config", filepath.Join(d, "client-admin"), "push", target)
	if err == nil || !strings.Contains(out, "project nosuch does not exist") {
		t.Errorf("docker push to a missing project: %v\n%s\nwant it to say the project does not exist", err, out)
	}

	if strings.Contains(s.log(), `"level":"ERROR"`) {
		t.Errorf("cove logged errors:\n%s", grepLines(s.log(), `"level":"ERROR"`))
	}
	// The robot's token records say what they granted.
	resp, b := s.doAs("GET", "/api/v2.0/audit-logs?q=operation%3Dtoken&page_size=100", nil, "admin", adminPassword)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"resource":"repository:team/robot:push,pull"`) {
		t.Errorf("no token record granting the robot push,pull on team/robot: %d %s", resp.StatusCode, b)
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestFirstStart: the generated admin password is printed only once cove is up — a start whose
// listener cannot bind prints none and loses none; the next start prints it, and it works. The
// start-up log names the version, data dir, listen address, admin page and each upstream.
func TestFirstStart(t *testing.T) {
	dir := t.TempDir()
	busy := freePortListener(t)
	cmd := execCove("serve", "--listen", busy.Addr().String(), "--data", dir)
	cmd.Env = append(os.Environ(), "COVE_AUTH_ADMIN_PASSWORD=", "JOURNAL_STREAM=") // printed, as outside systemd
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err == nil {
		t.Fatalf("cove started on a port in use:\n%s", stderr.String())
	}
	if strings.Contains(stdout.String(), "password") {
		t.Errorf("a start that failed printed a password:\n%s", stdout.String())
	}
	busy.Close()

	s := startCove(t, dir, "COVE_AUTH_ADMIN_PASSWORD=")
	var m []string
	// stdout reaches the test through its own pipe: wait for it, bounded.
	waitFor(t, 10*time.Second, "the generated password on stdout", func() bool {
		m = regexp.MustCompile(`generated the password of user "admin": (\S+)`).FindStringSubmatch(s.out.String())
		return m != nil
	})
	if resp, _ := s.doAs("GET", "/api/v2.0/users/current", nil, "admin", m[1]); resp.StatusCode != 200 {
		t.Errorf("the printed password does not sign in: %d", resp.StatusCode)
	}
	log := s.log()
	for _, want := range []string{`"msg":"cove starting"`, `"version":`, `"commit":`, `"data":"` + dir + `"`, `"admin_page":"http://` + s.addr + `/"`, `"msg":"upstream","name":"docker.io","url":"https://registry-1.docker.io"`} {
		if !strings.Contains(log, want) {
			t.Errorf("the start-up log lacks %s:\n%s", want, s.tail(10))
		}
	}
	// A restart prints no password, and a configured one does not replace the stored one.
	s.stop()
	s2 := startCove(t, dir, "COVE_AUTH_ADMIN_PASSWORD=Other-password1")
	if strings.Contains(s2.out.String(), "password") {
		t.Errorf("a restart printed a password:\n%s", s2.out.String())
	}
	if resp, _ := s2.doAs("GET", "/api/v2.0/users/current", nil, "admin", m[1]); resp.StatusCode != 200 {
		t.Errorf("the generated password stopped working at a restart with auth.admin_password: %d", resp.StatusCode)
	}
	// cove admin reset-password refuses while cove runs, and works once it is stopped.
	if out, err := execCove("admin", "reset-password", "admin", "--data", dir).CombinedOutput(); err == nil || !strings.Contains(string(out), "stop cove first") {
		t.Errorf("reset-password while cove runs: %v %s", err, out)
	}
	s2.stop()
	reset := execCove("admin", "reset-password", "admin", "--password-stdin", "--data", dir)
	reset.Stdin = strings.NewReader("Reset-password9\n")
	if out, err := reset.CombinedOutput(); err != nil {
		t.Fatalf("reset-password: %v %s", err, out)
	}
	s3 := startCove(t, dir)
	if resp, _ := s3.doAs("GET", "/api/v2.0/users/current", nil, "admin", "Reset-password9"); resp.StatusCode != 200 {
		t.Errorf("the reset password does not sign in: %d", resp.StatusCode)
	}
	if resp, _ := s3.doAs("GET", "/api/v2.0/users/current", nil, "admin", m[1]); resp.StatusCode != 401 {
		t.Errorf("the old password still signs in after a reset: %d", resp.StatusCode)
	}
}

// freePortListener holds a loopback port, for a test of a port in use.
func freePortListener(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
