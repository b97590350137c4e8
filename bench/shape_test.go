package bench

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"100MB/s", 100e6},
		{"1GB/s", 1e9},
		{"1.5GB/s", 1.5e9},
		{"50MiB/s", 50 << 20},
		{"64KiB", 64 << 10},
		{"800Mbit/s", 100e6},
		{" 10 kB/s ", 10e3},
		{"1B/s", 1},
	} {
		got, err := ParseRate(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
		if back, err := ParseRate(FormatRate(got)); err != nil || back != got {
			t.Errorf("ParseRate(FormatRate(%d) = %q) = %d, %v", got, FormatRate(got), back, err)
		}
	}
	for _, in := range []string{"", "fast", "100", "MB/s", "100XB/s", "-5MB/s", "0MB/s", "0.5B/s", "1e3MB/s", "100 MB/s/s", "1..2MB/s"} {
		if got, err := ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) = %d, want an error", in, got)
		}
	}
}

// fakeClock is a clock that moves only when slept on.
type fakeClock struct {
	t     time.Time
	slept time.Duration
}

func (c *fakeClock) now() time.Time { return c.t }
func (c *fakeClock) sleep(d time.Duration) bool {
	c.t = c.t.Add(d)
	c.slept += d
	return true
}

// TestPacerSchedule: on a clock that moves only when the pacer waits, a body of n bytes at rate
// r takes (n - the last burst)/r: no byte leaves before its time, and none is held after it.
func TestPacerSchedule(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rate   int64
		writes []int
	}{
		{"one large write", 1e6, []int{1 << 20}},
		{"many small writes", 1e6, []int{100, 5000, 1, 70000, 300000, 17}},
		{"fast rate, large bursts", 1e9, []int{8 << 20, 8 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := &fakeClock{t: time.Unix(1e9, 0)}
			var out bytes.Buffer
			p := &pacer{w: &out, rate: tc.rate, burst: burstFor(tc.rate), now: clk.now, sleep: clk.sleep}
			total := 0
			for _, n := range tc.writes {
				if m, err := p.Write(make([]byte, n)); m != n || err != nil {
					t.Fatalf("Write(%d bytes) = %d, %v", n, m, err)
				}
				total += n
			}
			if out.Len() != total {
				t.Fatalf("wrote %d bytes, want %d", out.Len(), total)
			}
			// The last byte leaves at or after (total - burst)/rate: a burst may go at once.
			lo := time.Duration(float64(total-p.burst) / float64(tc.rate) * float64(time.Second))
			hi := time.Duration(float64(total) / float64(tc.rate) * float64(time.Second))
			if clk.slept < lo || clk.slept > hi {
				t.Errorf("waited %v for %d bytes at %d B/s, want between %v and %v", clk.slept, total, tc.rate, lo, hi)
			}
		})
	}
}

// TestPacerCatchesUp: a wait that wakes late is made up, not added: the body as a whole keeps
// the rate.
func TestPacerCatchesUp(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	late := func(d time.Duration) bool { return clk.sleep(2 * d) } // every wake twice as late
	p := &pacer{w: io.Discard, rate: 1e6, burst: 10e3, now: clk.now, sleep: late}
	if _, err := p.Write(make([]byte, 1e6)); err != nil {
		t.Fatal(err)
	}
	if want := 1100 * time.Millisecond; clk.slept > want {
		t.Errorf("1 MB at 1 MB/s with late wakes took %v, want at most %v", clk.slept, want)
	}
}

// shapedUpstream serves one blob of size bytes from an upstream shaped by s.
func shapedUpstream(t *testing.T, s Shaping, size int64) (*upstream, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u, err := startUpstream(t.TempDir(), ln, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.close)
	d, err := u.addBlob(size, 1)
	if err != nil {
		t.Fatal(err)
	}
	return u, blobURL(u.url, d)
}

// TestShapedRate: a blob from an upstream shaped to a rate comes no faster than the rate, and
// not absurdly slower (the machine may be busy: the lower bound is loose), whole and right.
// 1 MiB at 8 MiB/s: an eighth of a second.
func TestShapedRate(t *testing.T) {
	const size, rate = 1 << 20, 8 << 20
	_, url := shapedUpstream(t, Shaping{Rate: rate}, size)
	c := newClient(1)
	f, err := fetch(c, url, true)
	if err != nil {
		t.Fatal(err)
	}
	if f.Bytes != size {
		t.Fatalf("got %d bytes, want %d", f.Bytes, size)
	}
	got := float64(f.Bytes) / f.Total.Seconds()
	// One burst may go ahead of the schedule: the bound over the body is
	// rate × size/(size - burst), 8.7 % over the rate here.
	if hi := rate * size / float64(size-burstFor(rate)); got > hi {
		t.Errorf("the shaped upstream sent %.0f B/s, want at most %.0f (the rate %d B/s and a burst)", got, hi, rate)
	}
	if lo := rate * 0.25; got < lo {
		t.Errorf("the shaped upstream sent %.0f B/s, want at least %.0f", got, lo)
	}
}

// TestShapedLatency: every answer waits a round trip before its first byte, and a new
// connection waits one more before its first request is read; a kept-alive connection does not.
func TestShapedLatency(t *testing.T) {
	const rtt = 40 * time.Millisecond
	u, url := shapedUpstream(t, Shaping{Latency: rtt}, 4<<10)
	c := newClient(1)
	for i, want := range []time.Duration{2 * rtt, rtt, rtt} { // a new connection, then kept alive
		f, err := fetch(c, url, false)
		if err != nil {
			t.Fatal(err)
		}
		if f.TTFB < want {
			t.Errorf("request %d: first byte after %v, want at least %v", i, f.TTFB, want)
		}
	}
	// Manifests wait as blobs do.
	if _, _, err := u.addImage("library/x", "v1", []int64{10}, 2); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := request(c, http.MethodHead, u.url+"/v2/library/x/manifests/v1"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < rtt {
		t.Errorf("manifest HEAD answered after %v, want at least %v", d, rtt)
	}
}
