package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"cove/internal/kv"
	"cove/internal/pgtest"

	"github.com/dgraph-io/badger/v4"
)

func openKV(t *testing.T) kv.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return kv.NewBadger(db)
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// member joins without its heartbeat loop: the test beats by hand, with its own clock.
func member(t *testing.T, db kv.DB, name string, c *clock) *Member {
	t.Helper()
	m := &Member{db: db, self: Node{Name: name, Advertise: "http://" + name + ":5000", Version: "test"},
		secret: []byte("a-secret-of-the-fleet"), log: slog.New(slog.DiscardHandler), now: c.now}
	if err := m.beat(context.Background()); err != nil {
		t.Fatal(err)
	}
	return m
}

// Nodes see each other through their heartbeats, agree on the owner of every key, and a node
// whose heartbeats stop is no longer live after LiveFor: its keys go to the next in line, and
// only its keys move.
func TestMembershipAndOwners(t *testing.T) {
	db := openKV(t)
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	a, b, cc := member(t, db, "a", c), member(t, db, "b", c), member(t, db, "c", c)
	for _, m := range []*Member{a, b, cc} {
		m.beat(context.Background())
	}
	nodes, err := a.Nodes(context.Background())
	if err != nil || len(nodes) != 3 {
		t.Fatalf("Nodes = %v, %v; want 3", nodes, err)
	}
	for _, n := range nodes {
		if !n.Live || n.Advertise == "" || n.Version != "test" {
			t.Errorf("node %+v", n)
		}
	}
	owned := map[string]int{}
	before := map[string]string{}
	for i := range 3000 {
		key := fmt.Sprintf("sha256:%064d", i)
		oa, ob, oc := a.Owners(key), b.Owners(key), cc.Owners(key)
		if len(oa) != 3 || oa[0].Name != ob[0].Name || ob[0].Name != oc[0].Name || oa[1].Name != oc[1].Name {
			t.Fatalf("the nodes disagree on the owners of %s: %v %v %v", key, oa, ob, oc)
		}
		owned[oa[0].Name]++
		before[key] = oa[0].Name
	}
	for name, n := range owned {
		if n < 700 || n > 1300 {
			t.Errorf("node %s owns %d of 3000 keys, want about a third", name, n)
		}
	}
	// c stops: after LiveFor, a and b count it gone.
	c.add(LiveFor)
	a.beat(context.Background())
	b.beat(context.Background())
	a.beat(context.Background()) // sees b's fresh heartbeat
	moved := 0
	for key, was := range before {
		now := a.Owners(key)[0].Name
		if now == "c" {
			t.Fatalf("%s still owned by the gone node", key)
		}
		if now != was {
			moved++
			if was != "c" {
				t.Fatalf("%s moved from %s, a live node, to %s", key, was, now)
			}
		}
	}
	if moved != owned["c"] {
		t.Errorf("%d keys moved, want c's %d", moved, owned["c"])
	}
}

// A node that leaves removes its record: the others do not wait LiveFor to stop counting on it.
func TestLeave(t *testing.T) {
	db := openKV(t)
	ctx := context.Background()
	a, err := Join(ctx, db, Node{Name: "a", Advertise: "http://a:5000"}, "a-secret-of-the-fleet", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Join(ctx, db, Node{Name: "b", Advertise: "http://b:5000"}, "a-secret-of-the-fleet", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Leave(ctx)
	if err := b.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	nodes, err := a.Nodes(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].Name != "a" {
		t.Errorf("after b left, Nodes = %v, %v", nodes, err)
	}
	if _, err := Join(ctx, db, Node{Name: "c", Advertise: "http://c:5000"}, "short", nil); err == nil {
		t.Error("Join with a short secret succeeded")
	}
}

// A node's signature is accepted by the node it was made for, once, and refused with another
// secret, on another path, by another node, a second time, or when old.
func TestSignatures(t *testing.T) {
	db := openKV(t)
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	a, b := member(t, db, "a", c), member(t, db, "b", c)
	req := httptest.NewRequest("GET", "http://b/internal/cluster/v1/blob?repo=library/x&digest=sha256:00", nil)
	a.Sign(req, "b")
	if err := a.Verify(req); err == nil {
		t.Error("a signature made for b was accepted by a")
	}
	if err := b.Verify(req); err != nil {
		t.Fatalf("a's signature refused by b: %v", err)
	}
	if err := b.Verify(req); err == nil {
		t.Error("a signature was accepted twice: a replay")
	}
	again := httptest.NewRequest("GET", req.URL.String(), nil)
	a.Sign(again, "b")
	if err := b.Verify(again); err != nil {
		t.Errorf("a second request, signed afresh within the same second, was refused: %v", err)
	}
	tampered := httptest.NewRequest("GET", "http://b/internal/cluster/v1/blob?repo=library/y&digest=sha256:00", nil)
	tampered.Header.Set(AuthHeader, req.Header.Get(AuthHeader))
	if err := b.Verify(tampered); err == nil {
		t.Error("a signature for another query was accepted")
	}
	other := &Member{self: Node{Name: "x"}, secret: []byte("another-secret-entirely"), now: c.now}
	forged := httptest.NewRequest("GET", "http://b/internal/cluster/v1/blob?repo=library/x&digest=sha256:00", nil)
	other.Sign(forged, "b")
	if err := b.Verify(forged); err == nil {
		t.Error("a signature with another secret was accepted")
	}
	if err := b.Verify(httptest.NewRequest("GET", "http://b/", nil)); err == nil {
		t.Error("an unsigned request was accepted")
	}
	// A signature made before the receiver started is refused: the nonces it saw died with the
	// process before (a replay after a restart).
	early := httptest.NewRequest("GET", req.URL.String(), nil)
	a.Sign(early, "b")
	started := b.self.Started
	b.self.Started = c.now().Add(10 * time.Second)
	if err := b.Verify(early); err == nil {
		t.Error("a signature from before the node's start was accepted")
	}
	b.self.Started = started
	old := httptest.NewRequest("GET", req.URL.String(), nil)
	a.Sign(old, "b")
	c.add(2 * maxSkew)
	if err := b.Verify(old); err == nil {
		t.Error("an old signature was accepted")
	}
}

// A node is refused when a live node at another address has its name, or when live nodes have
// another secret; with no node live, a new secret is taken (a fleet restarted with a new one).
func TestJoinRefusals(t *testing.T) {
	db := openKV(t)
	ctx := context.Background()
	a, err := Join(ctx, db, Node{Name: "a", Advertise: "http://a:5000"}, "the-secret-of-the-fleet", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Join(ctx, db, Node{Name: "a", Advertise: "http://elsewhere:5000"}, "the-secret-of-the-fleet", nil); err == nil || !strings.Contains(err.Error(), "cluster.node_name") {
		t.Errorf("a second node named a = %v, want a refusal naming cluster.node_name", err)
	}
	if _, err := Join(ctx, db, Node{Name: "b", Advertise: "http://b:5000"}, "another-secret-entirely", nil); err == nil || !strings.Contains(err.Error(), "cluster.secret") {
		t.Errorf("a node with another secret = %v, want a refusal naming cluster.secret", err)
	}
	if err := a.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := Join(ctx, db, Node{Name: "b", Advertise: "http://b:5000"}, "another-secret-entirely", nil)
	if err != nil {
		t.Fatalf("a node with a new secret and no node live = %v", err)
	}
	b.Leave(ctx)
}

// On PostgreSQL, heartbeats are written and judged by the database's clock: a node whose own
// clock is 30 s off still counts the others live, and they count it (a 30 s skew split the fleet).
func TestLivenessIgnoresLocalClocks(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	open := func() kv.DB {
		p, err := kv.OpenPostgres(ctx, srv.DSN)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	mk := func(db kv.DB, name string, skew time.Duration) *Member {
		m := &Member{db: db, self: Node{Name: name, Advertise: "http://" + name + ":5000"}, secret: []byte("a-secret-of-the-fleet"),
			log: slog.New(slog.DiscardHandler), now: func() time.Time { return time.Now().Add(skew) }}
		if err := m.beat(ctx); err != nil {
			t.Fatal(err)
		}
		return m
	}
	a, b := mk(open(), "a", 0), mk(open(), "b", 30*time.Second)
	a.beat(ctx)
	b.beat(ctx)
	for _, m := range []*Member{a, b} {
		if owners := m.Owners("sha256:00"); len(owners) != 2 {
			t.Errorf("node %s counts %d live nodes, want 2", m.self.Name, len(owners))
		}
	}
}

// Two processes with one name that both passed Join's check (started in the same second): the
// second heartbeat never takes the name from the first while it is live.
func TestOneNameOneLiveInstance(t *testing.T) {
	db := openKV(t)
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	mk := func(addr, instance string) *Member {
		return &Member{db: db, self: Node{Name: "a", Advertise: addr, Instance: instance}, secret: []byte("a-secret-of-the-fleet"),
			log: slog.New(slog.DiscardHandler), now: c.now}
	}
	first, second := mk("http://one:5000", "I1"), mk("http://two:5000", "I2")
	if err := first.beat(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := second.beat(context.Background()); err == nil || !strings.Contains(err.Error(), "cluster.node_name") {
		t.Errorf("the second instance's heartbeat = %v, want a refusal naming cluster.node_name", err)
	}
	nodes, _ := first.records(context.Background())
	if len(nodes) != 1 || nodes[0].Advertise != "http://one:5000" {
		t.Errorf("the name's record = %+v, want the first instance's", nodes)
	}
	// Once the first is gone, the name is free.
	c.add(LiveFor)
	if err := second.beat(context.Background()); err != nil {
		t.Errorf("the second instance once the first is gone = %v", err)
	}
}

// A node killed and started again at once finds its own last heartbeat still live: the new
// process waits for it to expire and takes the name; a process that goes on beating is refused.
func TestRestartAfterAKillTakesTheNameBack(t *testing.T) {
	db := openKV(t)
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	mk := func(instance string) *Member {
		return &Member{db: db, self: Node{Name: "a", Advertise: "http://a:5000", Instance: instance}, secret: []byte("a-secret-of-the-fleet"),
			log: slog.New(slog.DiscardHandler), now: c.now}
	}
	killed, restarted := mk("I1"), mk("I2")
	if err := killed.beat(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := restarted.firstBeat(context.Background(), c.add); err != nil {
		t.Errorf("the restart of a killed node = %v, want it to take its name once the old heartbeat expired", err)
	}
	alive, duplicate := mk("I3"), mk("I4")
	c.add(LiveFor) // the restarted one has stopped too
	if err := alive.beat(context.Background()); err != nil {
		t.Fatal(err)
	}
	keepBeating := func(d time.Duration) {
		c.add(d)
		if err := alive.beat(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if err := duplicate.firstBeat(context.Background(), keepBeating); err == nil || !strings.Contains(err.Error(), "cluster.node_name") {
		t.Errorf("a second process of a name whose first goes on beating = %v, want a refusal naming cluster.node_name", err)
	}
}
