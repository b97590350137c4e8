// Package cluster is fleet mode's membership: each node writes a heartbeat into the shared
// metadata store; the live nodes are those seen within LiveFor; rendezvous (highest random
// weight) hashing maps a key — a digest — to its owner among them, and to the next nodes in line
// should the owner fail. Requests between nodes carry an HMAC of the cluster secret.
package cluster

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cove/internal/kv"
)

const (
	// HeartbeatEvery is how often a node writes its heartbeat and reads the others'.
	HeartbeatEvery = time.Second
	// LiveFor is how long a node counts as live after its last heartbeat.
	LiveFor = 5 * time.Second
	// forgetAfter is when a node's record expires once its heartbeats stop.
	forgetAfter = time.Hour
	// maxSkew bounds how old (or how far in the future) a signed request may be.
	maxSkew = time.Minute
)

const (
	keyNodes  = "cluster/node/"
	keySecret = "cluster/secret-check" // an HMAC of a fixed text under the fleet's secret
)

// checkSecret makes sure this node has the fleet's secret: the first node writes an HMAC of a
// fixed text under it, and a node whose secret gives another one is refused while other nodes
// are live (with none live, the fleet is taking a new secret: the record is written anew).
func (m *Member) checkSecret(ctx context.Context, live int) error {
	h := hmac.New(sha256.New, m.secret)
	h.Write([]byte("cove cluster secret check"))
	mine := h.Sum(nil)
	return m.db.Update(ctx, func(txn kv.Txn) error {
		theirs, err := txn.Get([]byte(keySecret))
		switch {
		case err == nil && hmac.Equal(theirs, mine):
			return nil
		case err == nil && live > 0:
			return fmt.Errorf("cluster.secret: this node's secret is not the fleet's (%d other nodes are live with another one): "+
				"give every node the same secret", live)
		case err != nil && !errors.Is(err, kv.ErrNotFound):
			return err
		}
		return txn.Set([]byte(keySecret), mine)
	})
}

// Node is one member of the fleet.
type Node struct {
	Name      string    `json:"name"`
	Advertise string    `json:"advertise_url"` // the URL the other nodes reach it at
	Version   string    `json:"version"`
	Started   time.Time `json:"started"`
	Seen      time.Time `json:"last_heartbeat"`
	Live      bool      `json:"live"`
	// Instance tells apart two processes that use one name: a heartbeat never takes the name
	// from another live instance.
	Instance string `json:"instance,omitempty"`
}

// Member is this node in the fleet. It is safe for concurrent use.
type Member struct {
	db     kv.DB
	self   Node
	secret []byte
	log    *slog.Logger
	now    func() time.Time

	mu   sync.Mutex
	live []Node // guarded by mu: the live nodes at the last heartbeat, self always among them

	skewed atomic.Bool // the clock's skew was logged
	seen   nonces      // the signatures taken (Verify)

	stop chan struct{}
	done chan struct{}
}

// Join writes self's first heartbeat and keeps beating until Leave. secret authenticates the
// requests between nodes; it must be the same on every node.
func Join(ctx context.Context, db kv.DB, self Node, secret string, log *slog.Logger) (*Member, error) {
	if self.Name == "" || self.Advertise == "" || len(secret) < 16 {
		return nil, errors.New("cluster: a node needs a name, an advertise URL and a secret of 16 bytes or more")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Member{db: db, self: self, secret: []byte(secret), log: log.With("component", "cluster"), now: time.Now,
		stop: make(chan struct{}), done: make(chan struct{})}
	m.self.Started = m.now().UTC()
	m.self.Instance = rand.Text()
	nodes, err := m.records(ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster: read the fleet's nodes: %w", err)
	}
	live := 0
	for _, n := range nodes {
		if n.Live && n.Name != self.Name {
			live++
		}
		if n.Name == self.Name && n.Live && n.Advertise != self.Advertise {
			return nil, fmt.Errorf("cluster.node_name: the node %q is live at %s already: give each node a name of its own "+
				"(a node that moved to another address: start it again %s after it stopped)", n.Name, n.Advertise, LiveFor)
		}
	}
	if err := m.checkSecret(ctx, live); err != nil {
		return nil, err
	}
	if err := m.firstBeat(ctx, time.Sleep); err != nil {
		return nil, fmt.Errorf("cluster: write the first heartbeat: %w", err)
	}
	go m.loop()
	return m, nil
}

// nameTakenError is a live heartbeat of another process under this node's name.
type nameTakenError struct{ name, advertise string }

func (e *nameTakenError) Error() string {
	return fmt.Sprintf("cluster.node_name: another process named %q is live at %s: give each node a name of its own", e.name, e.advertise)
}

// firstBeat writes the first heartbeat. A live heartbeat under this name from another process at
// this node's own address is, most likely, this node killed a moment ago and started again (by
// systemd or Kubernetes): it is given until it would no longer count as live, and only a process
// that goes on beating is refused. sleep waits (time.Sleep; tests move a clock).
func (m *Member) firstBeat(ctx context.Context, sleep func(time.Duration)) error {
	deadline := m.now().Add(LiveFor + 2*HeartbeatEvery)
	for waited := false; ; waited = true {
		err := m.beat(ctx)
		var taken *nameTakenError
		if !errors.As(err, &taken) || taken.advertise != m.self.Advertise || !m.now().Before(deadline) {
			return err
		}
		if !waited {
			m.log.Info("the last heartbeat under this node's name is from another process at its address, "+
				"probably this node before a restart: waiting for it to expire", "name", m.self.Name, "expires_within", LiveFor)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		sleep(HeartbeatEvery)
	}
}

// Self is this node.
func (m *Member) Self() Node { return m.self }

func (m *Member) loop() {
	defer close(m.done)
	t := time.NewTicker(HeartbeatEvery)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*HeartbeatEvery)
		err := m.beat(ctx)
		cancel()
		if err != nil && !failing {
			m.log.Warn("heartbeat failed: if it keeps failing, the other nodes count this one as gone after "+LiveFor.String(), "err", err)
		} else if err == nil && failing {
			m.log.Info("heartbeats written again")
		}
		failing = err != nil
	}
}

// clock is the time heartbeats are written and judged by: the database server's when it has one
// (PostgreSQL), so that nodes whose clocks differ still agree on who is live; else this node's.
func (m *Member) clock(ctx context.Context) time.Time {
	c, ok := m.db.(interface {
		Now(context.Context) (time.Time, error)
	})
	if !ok {
		return m.now().UTC()
	}
	t, err := c.Now(ctx)
	if err != nil {
		return m.now().UTC()
	}
	if skew := m.now().Sub(t); (skew > maxLocalSkew || skew < -maxLocalSkew) && !m.skewed.Swap(true) {
		m.log.Error("this node's clock is off the database's: node signatures allow a minute; run NTP",
			"skew", skew.Round(time.Millisecond).String())
	} else if skew <= maxLocalSkew && skew >= -maxLocalSkew {
		m.skewed.Store(false)
	}
	return t
}

// maxLocalSkew is how far this node's clock may be from the database's before it is logged.
const maxLocalSkew = 2 * time.Second

// beat writes self's heartbeat and reads the live nodes.
func (m *Member) beat(ctx context.Context) error {
	now := m.clock(ctx)
	self := m.self
	self.Seen = now
	b, err := json.Marshal(self)
	if err != nil {
		return err
	}
	// kv.Retry: a write conflict with another node's transaction is retried, not a failed beat.
	if err := kv.Retry(ctx, m.db, func(txn kv.Txn) error {
		// Read first: two processes with one name, started in the same second, both passed
		// Join's check; the second to write finds the first's live heartbeat here (on
		// PostgreSQL, concurrent writers of one name conflict) and never takes the name over.
		if v, err := txn.Get([]byte(keyNodes + self.Name)); err == nil {
			var other Node
			if json.Unmarshal(v, &other) == nil && other.Instance != "" && other.Instance != self.Instance &&
				now.Sub(other.Seen) < LiveFor && other.Seen.Sub(now) < LiveFor {
				return &nameTakenError{name: self.Name, advertise: other.Advertise}
			}
		}
		return txn.SetExpiring([]byte(keyNodes+self.Name), b, now.Add(forgetAfter))
	}); err != nil {
		return err
	}
	nodes, err := m.records(ctx)
	if err != nil {
		return err
	}
	live := []Node{}
	for _, n := range nodes {
		if n.Live {
			live = append(live, n)
		}
	}
	if !slices.ContainsFunc(live, func(n Node) bool { return n.Name == m.self.Name }) {
		live = append(live, self)
	}
	m.mu.Lock()
	m.live = live
	m.mu.Unlock()
	return nil
}

// Nodes lists every node with a record (those gone for over an hour have none), by name; Live
// says whether this node counts it live now — as it does when choosing owners.
func (m *Member) Nodes(ctx context.Context) ([]Node, error) {
	nodes, err := m.records(ctx)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range nodes {
		nodes[i].Live = slices.ContainsFunc(m.live, func(n Node) bool { return n.Name == nodes[i].Name })
	}
	return nodes, nil
}

// records reads every node's record, Live by its last heartbeat.
func (m *Member) records(ctx context.Context) ([]Node, error) {
	var out []Node
	now := m.clock(ctx)
	err := m.db.View(ctx, func(txn kv.Txn) error {
		return txn.Scan([]byte(keyNodes), kv.ScanOptions{}, func(_, v []byte) (bool, error) {
			var n Node
			if err := json.Unmarshal(v, &n); err != nil {
				return true, nil // a record of another version: skipped
			}
			n.Live = now.Sub(n.Seen) < LiveFor && n.Seen.Sub(now) < LiveFor
			out = append(out, n)
			return true, nil
		})
	})
	return out, err
}

// Owners returns the live nodes in rendezvous order for key: the owner first, then who takes
// over should it fail.
func (m *Member) Owners(key string) []Node {
	m.mu.Lock()
	nodes := slices.Clone(m.live)
	m.mu.Unlock()
	return Rank(nodes, key)
}

// Rank orders nodes by their rendezvous weight for key, highest first (ties by name).
func Rank(nodes []Node, key string) []Node {
	weight := func(n Node) uint64 {
		h := sha256.Sum256([]byte(n.Name + "\x00" + key))
		return binary.BigEndian.Uint64(h[:8])
	}
	slices.SortFunc(nodes, func(a, b Node) int {
		if c := cmp.Compare(weight(b), weight(a)); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return nodes
}

// Leave stops the heartbeats and removes self's record: the others stop counting on it at once.
func (m *Member) Leave(ctx context.Context) error {
	close(m.stop)
	<-m.done
	return m.db.Update(ctx, func(txn kv.Txn) error { return txn.Delete([]byte(keyNodes + m.self.Name)) })
}

// AuthHeader is the header that carries a node's signature.
const AuthHeader = "X-Cove-Node"

// Sign signs a request to node to, another node of the fleet: who sends it, when, a random nonce,
// and a MAC over those, the receiver's name, the method and the URL's path and query. The receiver
// takes each signature once (see Verify), so a request seen on the wire cannot be sent again, nor
// to another node.
func (m *Member) Sign(r *http.Request, to string) {
	ts := strconv.FormatInt(m.now().Unix(), 10)
	nonce := rand.Text()
	r.Header.Set(AuthHeader, m.self.Name+" "+ts+" "+nonce+" "+hex.EncodeToString(m.mac(m.self.Name, ts, nonce, to, r)))
}

// Verify checks a request's node signature: nil when another node of the fleet sent it to this
// node lately, and this signature was not seen before.
func (m *Member) Verify(r *http.Request) error {
	parts := strings.Fields(r.Header.Get(AuthHeader))
	if len(parts) != 4 {
		return errors.New("no node signature")
	}
	sec, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return errors.New("a malformed node signature")
	}
	now := m.now()
	if d := now.Sub(time.Unix(sec, 0)); d > maxSkew || d < -maxSkew {
		return fmt.Errorf("a node signature %s old: clocks apart, or a replay", d.Round(time.Second))
	}
	// The nonces seen live in this process only: a signature made before it started (less a
	// little skew) may have been taken by the process before, and is refused.
	if time.Unix(sec, 0).Before(m.self.Started.Add(-restartSkew)) {
		return errors.New("a node signature older than this node's start: a replay, or the sender's clock is behind (run NTP)")
	}
	got, err := hex.DecodeString(parts[3])
	if err != nil || !hmac.Equal(got, m.mac(parts[0], parts[1], parts[2], m.self.Name, r)) {
		return errors.New("a wrong node signature: is cluster.secret the same on every node?")
	}
	return m.seen.first(parts[2], now)
}

// restartSkew is how much older than this process's start a signature may be: the clocks of two
// nodes a little apart.
const restartSkew = 2 * time.Second

// maxNonces bounds the signatures a node remembers: far above what nodes send each other within
// twice maxSkew (cold blobs asked of their owner, tag checks, upload chunks).
const maxNonces = 1 << 18

// nonces are the nonces of the signatures accepted within twice maxSkew (a signature is
// good for maxSkew either side of its time), so that each is taken once.
type nonces struct {
	mu   sync.Mutex
	seen map[string]time.Time // nonce → when it may be forgotten
}

// first records nonce, or refuses it when it was seen before, or when too many are remembered.
func (n *nonces) first(nonce string, now time.Time) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.seen == nil {
		n.seen = map[string]time.Time{}
	}
	if _, ok := n.seen[nonce]; ok {
		return errors.New("a node signature used twice: a replay")
	}
	if len(n.seen) >= maxNonces {
		for k, until := range n.seen {
			if now.After(until) {
				delete(n.seen, k)
			}
		}
		if len(n.seen) >= maxNonces {
			return errors.New("too many node requests in the last two minutes: retry later")
		}
	}
	n.seen[nonce] = now.Add(2 * maxSkew)
	return nil
}

func (m *Member) mac(from, ts, nonce, to string, r *http.Request) []byte {
	h := hmac.New(sha256.New, m.secret)
	var b bytes.Buffer
	for _, s := range []string{from, ts, nonce, to, r.Method, r.URL.EscapedPath(), r.URL.RawQuery} {
		b.WriteString(s)
		b.WriteByte(0)
	}
	h.Write(b.Bytes())
	return h.Sum(nil)
}

// Transient says whether the record under key is a node's heartbeat: state of the running fleet,
// which a backup leaves out (a restored fleet's nodes join afresh).
func Transient(key []byte) bool { return strings.HasPrefix(string(key), keyNodes) }
