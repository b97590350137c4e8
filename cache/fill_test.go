package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// gate is an upstream body that hands out its bytes only as the test allows.
type gate struct {
	data    []byte
	off     int
	allow   chan int // how many more bytes may be read
	budget  int
	failAt  int // when > 0, fail after this many bytes
	corrupt bool
}

func (g *gate) Read(p []byte) (int, error) {
	if g.off == len(g.data) {
		return 0, io.EOF
	}
	if g.failAt > 0 && g.off >= g.failAt {
		return 0, io.ErrUnexpectedEOF
	}
	for g.budget == 0 {
		n, ok := <-g.allow
		if !ok {
			g.budget = len(g.data)
		} else {
			g.budget = n
		}
	}
	n := min(len(p), g.budget, len(g.data)-g.off)
	if g.failAt > 0 {
		n = min(n, g.failAt-g.off)
	}
	copy(p, g.data[g.off:g.off+n])
	if g.corrupt {
		p[0] ^= 0xff
	}
	g.off += n
	g.budget -= n
	return n, nil
}

func (g *gate) Close() error { return nil }

// startFill starts the fill of data for repo from an upstream that sends it whole, announcing
// size (-1: no size).
func startFill(t *testing.T, s *Store, repo string, data []byte, size int64) *Fill {
	t.Helper()
	f, _, err := s.Fills.FromUpstream(digest.FromBytes(data), repo, func(context.Context) (io.ReadCloser, int64, error) {
		return io.NopCloser(bytes.NewReader(data)), size, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFillStreamsToEveryReaderOnce(t *testing.T) {
	s, _ := newStore(t)
	data := randomBytes(t, 1<<20)
	dgst := digest.FromBytes(data)
	g := &gate{data: data, allow: make(chan int)}
	var fetches atomic.Int32
	fetch := func(ctx context.Context) (io.ReadCloser, int64, error) {
		fetches.Add(1)
		return g, int64(len(data)), nil
	}
	f, joined, err := s.Fills.FromUpstream(dgst, "docker.io/library/x", fetch)
	if err != nil || joined {
		t.Fatalf("Fills.FromUpstream = %v, joined %v", err, joined)
	}
	ctx := context.Background()
	first, err := f.Reader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if first.Size() != int64(len(data)) {
		t.Errorf("Size() = %d", first.Size())
	}
	// Let half through: the first reader sees it before the download ends, minus the held-back tail.
	g.allow <- len(data) / 2
	buf := make([]byte, len(data))
	n, err := io.ReadAtLeast(first, buf, len(data)/4)
	if err != nil || !bytes.Equal(buf[:n], data[:n]) {
		t.Fatalf("first reader got %d bytes (%v) before the end", n, err)
	}
	// A second client joins the same fill: no second fetch.
	f2, joined, _ := s.Fills.FromUpstream(dgst, "docker.io/library/x", fetch)
	if !joined || f2 != f {
		t.Fatal("a concurrent Fills.FromUpstream started a second download")
	}
	second, err := f2.Reader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	close(g.allow)
	var wg sync.WaitGroup
	for _, r := range []*FillReader{first, second} {
		wg.Go(func() {
			defer r.Close()
			got, err := io.ReadAll(r)
			if r == first {
				got = append(buf[:n:n], got...)
			}
			if err != nil || digest.FromBytes(got) != dgst {
				t.Errorf("reader got %d bytes, %v", len(got), err)
			}
		})
	}
	wg.Wait()
	if fetches.Load() != 1 {
		t.Errorf("fetched %d times, want 1", fetches.Load())
	}
	waitStored(t, s, "docker.io/library/x", dgst)
	if _, mirrored := s.Evictor.Stats(); mirrored != 0 {
		t.Errorf("evictions = %d", mirrored)
	}
	if b, _ := s.Evictor.Stats(); b != int64(len(data)) {
		t.Errorf("mirrored bytes = %d, want %d", b, len(data))
	}
}

// waitStored polls until dgst is readable in repo: the fill commits after its readers finish.
func waitStored(t *testing.T, s *Store, repo string, dgst digest.Digest) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := s.StatBlob(context.Background(), repo, dgst); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never stored in %s", dgst, repo)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFillNeverCompletesAWrongBlob(t *testing.T) {
	data := randomBytes(t, 300<<10)
	dgst := digest.FromBytes(data)
	tests := []struct {
		name string
		body *gate
		size int64
		want error
	}{
		{"corrupted", &gate{data: data, corrupt: true}, int64(len(data)), ErrUpstreamCorrupt},
		{"truncated", &gate{data: data, failAt: len(data) - 100}, int64(len(data)), ErrUpstreamCut},
		{"shorter than announced", &gate{data: data[:len(data)-10]}, int64(len(data)), ErrUpstreamCut},
		{"unknown size, corrupted", &gate{data: data, corrupt: true}, -1, ErrUpstreamCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t)
			tt.body.allow = make(chan int)
			close(tt.body.allow)
			f, _, err := s.Fills.FromUpstream(dgst, "docker.io/library/x", func(context.Context) (io.ReadCloser, int64, error) {
				return tt.body, tt.size, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// The error comes from Reader when the fill has failed already, else from Read.
			var got []byte
			r, err := f.Reader(context.Background())
			if err == nil {
				got, err = io.ReadAll(r)
				r.Close()
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("read error = %v, want %v", err, tt.want)
			}
			if len(got) > len(data)-holdBack {
				t.Errorf("reader got %d of %d bytes: more than all but the held-back tail", len(got), len(data))
			}
			if _, err := s.StatBlob(context.Background(), "docker.io/library/x", dgst); !errors.Is(err, ErrBlobUnknown) {
				t.Errorf("a bad blob was stored: %v", err)
			}
		})
	}
}

// A reader that joined before any byte arrived gets no byte of the held-back tail while the
// digest is unchecked, even when all but one byte of the blob has been written; once the last
// byte comes and the digest is wrong, it gets the error, never the blob.
func TestFillHoldsTheTailBackUntilTheDigestMatched(t *testing.T) {
	data := randomBytes(t, 300<<10)
	for _, size := range []int64{int64(len(data)), -1} {
		for _, corrupt := range []bool{false, true} {
			s, _ := newStore(t)
			body := bytes.Clone(data)
			if corrupt {
				body[len(body)-1] ^= 0xff // only the last byte is wrong
			}
			g := &gate{data: body, allow: make(chan int)}
			f, _, err := s.Fills.FromUpstream(digest.FromBytes(data), "docker.io/library/x", func(context.Context) (io.ReadCloser, int64, error) {
				return g, size, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			r, err := f.Reader(ctx) // joined before any byte
			if err != nil {
				t.Fatal(err)
			}
			g.allow <- len(data) - 1
			waitFor(t, func() bool {
				f.mu.Lock()
				defer f.mu.Unlock()
				return f.received == int64(len(data)-1)
			})
			cancel() // Read now returns what is available, then the context's error
			var got int
			buf := make([]byte, 32<<10)
			for {
				n, err := r.Read(buf)
				got += n
				if err != nil {
					break
				}
			}
			if got > len(data)-holdBack || got < len(data)-1-holdBack {
				t.Errorf("size %d: a reader got %d of %d bytes before the digest was checked; want all but the %d held back", size, got, len(data), holdBack)
			}
			r.Close()
			r2, err := f.Reader(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			close(g.allow)
			rest, err := io.ReadAll(r2)
			r2.Close()
			switch {
			case corrupt && !errors.Is(err, ErrUpstreamCorrupt):
				t.Errorf("size %d: corrupt last byte: read error %v, want ErrUpstreamCorrupt", size, err)
			case corrupt && len(rest) > len(data)-holdBack:
				t.Errorf("size %d: corrupt blob: a reader got %d bytes", size, len(rest))
			case !corrupt && (err != nil || !bytes.Equal(rest, data)):
				t.Errorf("size %d: good blob: read %d bytes, %v", size, len(rest), err)
			}
		}
	}
}

func TestFillFailsFastWhenUpstreamRefuses(t *testing.T) {
	s, _ := newStore(t)
	refused := errors.New("upstream said 404")
	f, _, err := s.Fills.FromUpstream(digest.FromString("x"), "docker.io/library/x", func(context.Context) (io.ReadCloser, int64, error) {
		return nil, 0, refused
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Reader(context.Background()); !errors.Is(err, refused) {
		t.Errorf("Reader = %v, want the fetch error", err)
	}
	// The failed fill is gone: the next request for the same digest starts a new one.
	waitFor(t, func() bool {
		_, joined, _ := s.Fills.FromUpstream(digest.FromString("x"), "r", func(context.Context) (io.ReadCloser, int64, error) { return nil, 0, refused })
		return !joined
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFillGoesOnWhenTheClientLeaves(t *testing.T) {
	s, _ := newStore(t)
	data := randomBytes(t, 512<<10)
	dgst := digest.FromBytes(data)
	g := &gate{data: data, allow: make(chan int)}
	f, _, _ := s.Fills.FromUpstream(dgst, "docker.io/library/x", func(context.Context) (io.ReadCloser, int64, error) {
		return g, int64(len(data)), nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	r, err := f.Reader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cancel() // the client hangs up
	if _, err := r.Read(make([]byte, 10)); !errors.Is(err, context.Canceled) {
		t.Errorf("Read after hang-up = %v", err)
	}
	r.Close()
	close(g.allow)
	waitStored(t, s, "docker.io/library/x", dgst)
	bf, err := s.OpenBlob(context.Background(), "docker.io/library/x", dgst)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(bf)
	bf.Close()
	if !bytes.Equal(got, data) {
		t.Error("stored blob differs")
	}
}

func TestEvictLeastRecentlyUsedMirroredContent(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	tick := func() { mu.Lock(); now = now.Add(time.Minute); mu.Unlock() }
	s := openStore(t, Config{MaxMirrored: 250 << 10, Now: clock})
	// A local blob larger than the cap: never evicted, never counted.
	local := randomBytes(t, 300<<10)
	if _, err := s.PutBlob(ctx, "p/a", digest.FromBytes(local), bytes.NewReader(local), -1); err != nil {
		t.Fatal(err)
	}
	fill := func(data []byte) digest.Digest {
		d := digest.FromBytes(data)
		f, _, err := s.Fills.FromUpstream(d, "docker.io/library/x", func(context.Context) (io.ReadCloser, int64, error) {
			return io.NopCloser(bytes.NewReader(data)), int64(len(data)), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		r, err := f.Reader(ctx)
		if err == nil {
			io.Copy(io.Discard, r)
			r.Close()
		}
		waitStored(t, s, "docker.io/library/x", d)
		// The fill counts as in use until it has left the store's list; wait for that, or an
		// eviction running meanwhile would rightly pass it over.
		waitFor(t, func() bool { return !s.Fills.busy(d) })
		tick()
		return d
	}
	a := fill(randomBytes(t, 100<<10))
	b := fill(randomBytes(t, 100<<10))
	// Read a again: now b is the least recently used.
	bf, err := s.OpenBlob(ctx, "docker.io/library/x", a)
	if err != nil {
		t.Fatal(err)
	}
	bf.Close()
	tick()
	c := fill(randomBytes(t, 100<<10)) // 300 KiB > 250 KiB: one must go
	waitFor(t, func() bool { _, n := s.Evictor.Stats(); return n == 1 })
	if _, err := s.StatBlob(ctx, "docker.io/library/x", b); !errors.Is(err, ErrBlobUnknown) {
		t.Errorf("least recently used blob b still stored: %v", err)
	}
	for _, d := range []digest.Digest{a, c} {
		if _, err := s.StatBlob(ctx, "docker.io/library/x", d); err != nil {
			t.Errorf("recently used %s evicted: %v", d, err)
		}
	}
	if _, err := s.StatBlob(ctx, "p/a", digest.FromBytes(local)); err != nil {
		t.Errorf("local blob evicted: %v", err)
	}
	if bytes, _ := s.Evictor.Stats(); bytes > 250<<10 {
		t.Errorf("mirrored bytes %d over the cap", bytes)
	}
	if _, err := os.Stat(s.blobPath(b)); !os.IsNotExist(err) {
		t.Errorf("evicted file still on disk: %v", err)
	}
}

func TestEvictPassesOverBlobsInUse(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, Config{MaxMirrored: 150 << 10})
	fill := func() digest.Digest {
		data := randomBytes(t, 100<<10)
		d := digest.FromBytes(data)
		f, _, err := s.Fills.FromUpstream(d, "docker.io/library/x", func(context.Context) (io.ReadCloser, int64, error) {
			return io.NopCloser(bytes.NewReader(data)), int64(len(data)), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if r, err := f.Reader(ctx); err == nil {
			io.Copy(io.Discard, r)
			r.Close()
		}
		// The reader is done once the bytes are verified; the fill ends after the index write.
		waitFor(t, func() bool { return !s.Fills.busy(d) })
		return d
	}
	x := fill()
	waitStored(t, s, "docker.io/library/x", x)
	release := s.hold(x) // a reader has x open
	y := fill()          // over the cap: x is the oldest but in use, so y goes
	waitFor(t, func() bool { _, n := s.Evictor.Stats(); return n == 1 })
	if _, err := s.StatBlob(ctx, "docker.io/library/x", x); err != nil {
		t.Errorf("a blob in use was evicted: %v", err)
	}
	if _, err := s.StatBlob(ctx, "docker.io/library/x", y); !errors.Is(err, ErrBlobUnknown) {
		t.Errorf("y should have made room: %v", err)
	}
	release()
	fill() // over the cap again: x, no longer in use, goes now
	waitFor(t, func() bool { _, n := s.Evictor.Stats(); return n == 2 })
	if _, err := s.StatBlob(ctx, "docker.io/library/x", x); !errors.Is(err, ErrBlobUnknown) {
		t.Errorf("x after release: %v, want evicted", err)
	}
}

// A reader that keeps up is served from memory: it has every byte but the held-back tail while
// nothing is written to the fill's file yet, and the whole blob once the file catches up.
func TestFillServesReadersFromMemoryWhileTheFileLags(t *testing.T) {
	s, _ := newStore(t)
	release := make(chan struct{})
	s.Fills.beforeWrite = func() { <-release }
	data := randomBytes(t, 3<<20)
	f := startFill(t, s, "docker.io/library/x", data, int64(len(data)))
	r, err := f.Reader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	head := make([]byte, len(data)-holdBack)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	flushed := f.flushed
	f.mu.Unlock()
	if flushed != 0 || !bytes.Equal(head, data[:len(head)]) {
		t.Fatalf("a reader got %d bytes (right: %v) with %d written to the file; want them from memory with none written", len(head), bytes.Equal(head, data[:len(head)]), flushed)
	}
	close(release)
	tail, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(append(head, tail...), data) {
		t.Fatalf("the rest: %d bytes, %v", len(tail), err)
	}
	waitFor(t, func() bool { return s.HasBlob(context.Background(), digest.FromBytes(data)) })
}

// A download whose file falls behind waits at fillWindow bytes ahead of it, so a fill's memory
// is bounded whatever the blob's size; a reader joining late reads the dropped part from the file.
func TestFillWaitsForItsFileBeyondTheWindow(t *testing.T) {
	s, _ := newStore(t)
	release := make(chan struct{})
	full := make(chan struct{}, 1)
	s.Fills.beforeWrite = func() { <-release }
	s.Fills.windowFull = func() {
		select {
		case full <- struct{}{}:
		default:
		}
	}
	data := randomBytes(t, 3*fillWindow)
	f := startFill(t, s, "docker.io/library/x", data, -1)
	select {
	case <-full:
	case <-time.After(10 * time.Second):
		t.Fatal("the download never waited for its file")
	}
	f.mu.Lock()
	received, held := f.received, 0
	for _, c := range f.chunks {
		held += len(c.data)
	}
	f.mu.Unlock()
	if received > fillWindow || held > fillWindow {
		t.Fatalf("with nothing written: %d bytes received, %d held in memory; want at most %d", received, held, fillWindow)
	}
	close(release)
	waitFor(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.flushed >= 2*fillWindow && f.hashed >= 2*fillWindow
	})
	r, err := f.Reader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("a late reader: %d of %d bytes, %v", len(got), len(data), err)
	}
}

// mirrorBlob stores data in s as a fill from repo's upstream would, read whole by one client, and
// waits until the fill is committed and done.
func mirrorBlob(t *testing.T, s *Store, repo string, data []byte) digest.Digest {
	t.Helper()
	f := startFill(t, s, repo, data, int64(len(data)))
	if r, err := f.Reader(context.Background()); err == nil {
		io.Copy(io.Discard, r)
		r.Close()
	}
	waitStored(t, s, repo, f.dgst)
	waitFor(t, func() bool { return !s.Fills.busy(f.dgst) })
	return f.dgst
}
