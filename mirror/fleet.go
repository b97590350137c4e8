package mirror

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"cove/internal/cluster"

	"github.com/opencontainers/go-digest"
)

// In a fleet (Config.Cluster), each digest has an owner among the live nodes (rendezvous
// hashing): a node asked for a mirrored blob that no node has stored yet streams it from the
// owner, which does the one upstream download it coalesces for all its clients, local or from
// other nodes. The fleet downloads a digest once. Should the owner not answer, the next node in
// line is asked, and at last the node fills it itself: a failure costs at most one more
// download. The owner stores the blob in the shared blob store, from where every node reads it
// afterwards.

// fromPeer says whether r comes from another node of the fleet: its signature is checked; a
// request that carries a wrong one is refused.
func (s *Server) fromPeer(r *http.Request, rt route) (bool, error) {
	if r.Header.Get(cluster.AuthHeader) == "" {
		return false, nil
	}
	if s.cluster == nil {
		return false, newError(http.StatusUnauthorized, CodeUnauthorized, "this node is not in a fleet (cluster.advertise)")
	}
	if err := s.cluster.Verify(r); err != nil {
		// Said in a header too, so that the asking node tells a refused signature from its
		// client's refusal, and asks another node instead of passing a 401 to the client.
		return false, &Error{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Message: "node signature refused: " + err.Error(), Err: err,
			header: http.Header{"X-Cove-Node-Refused": {"1"}}}
	}
	return true, nil
}

// fromOwner streams the blob dgst from its owner when that is another node, and reports whether
// it answered the request. It answers nothing (false) when this node owns the blob, when the
// request comes from a peer already (one hop at most), or when no other node could be asked:
// the caller then fills the blob itself.
func (s *Server) fromOwner(w http.ResponseWriter, r *http.Request, req request, dgst digest.Digest) (bool, error) {
	if s.cluster == nil || req.peer || r.Method != http.MethodGet {
		return false, nil
	}
	self := s.cluster.Self().Name
	for _, n := range s.cluster.Owners(dgst.String()) {
		if n.Name == self {
			return false, nil
		}
		resp, err := s.askPeer(r, http.MethodGet, n, req)
		if err != nil {
			s.log.WarnContext(r.Context(), "the owner of a blob did not answer; the next node in line is asked",
				"owner", n.Name, "digest", dgst, "err", err)
			continue
		}
		defer resp.Body.Close()
		// The owner's Cache-Status says where the blob came from; counted here as "fleet".
		s.setOutcome(w, req, outcome{"fleet", cmp.Or(resp.Header.Get("Cache-Status"), csHit.value)})
		relayPeer(w, resp)
		if _, err := io.CopyBuffer(writerOnly{w}, resp.Body, make([]byte, 32<<10)); err != nil {
			// The status is sent: the client must not take a cut blob for a whole one.
			s.log.WarnContext(r.Context(), "a blob streamed from its owner was cut", "owner", n.Name, "digest", dgst, "err", err)
			panic(http.ErrAbortHandler)
		}
		return true, nil
	}
	return false, nil
}

// askPeer sends the client's request to node n, signed. A node that cannot be reached, or
// answers 5xx, is an error: the next one is asked.
func (s *Server) askPeer(r *http.Request, method string, n cluster.Node, req request) (*http.Response, error) {
	if s.peerDown(n.Name) {
		return nil, errors.New("it failed a moment ago")
	}
	ctx, cancel := context.WithCancel(r.Context())
	// The query goes too: containerd names the upstream in ?ns=, and the owner must route the
	// request as this node did.
	u := strings.TrimSuffix(n.Advertise, "/") + r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	out, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	if rng := r.Header.Get("Range"); rng != "" {
		out.Header.Set("Range", rng)
	}
	s.cluster.Sign(out, n.Name)
	// The answer's headers come once the owner's fill has an answer from the upstream: the
	// upstream's budget, and some more.
	timer := time.AfterFunc(s.budget(req.up)+5*time.Second, cancel)
	resp, err := s.peerClient().Do(out)
	if err != nil {
		cancel()
		s.markPeerDown(n.Name)
		return nil, err
	}
	if !timer.Stop() {
		resp.Body.Close()
		cancel()
		s.markPeerDown(n.Name)
		return nil, errors.New("no answer within the upstream's time budget")
	}
	if resp.StatusCode >= 500 || (resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("X-Cove-Node-Refused") != "") {
		resp.Body.Close()
		cancel()
		if resp.StatusCode == http.StatusUnauthorized {
			s.log.ErrorContext(r.Context(), "a node of the fleet refused this node's signature: is cluster.secret the same on every node?", "node", n.Name)
			return nil, errors.New("refused this node's signature (cluster.secret)")
		}
		return nil, errors.New("answered " + resp.Status)
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// tagFromOwner asks the owner of a mirrored tag to fetch or confirm it with the upstream (a
// HEAD, which does either and answers no body), so that the fleet asks the upstream once per tag
// and tag_ttl, not once per node. It returns the owner's status, or 0 when this node must ask
// the upstream itself: it owns the tag, the request comes from a peer, or no other node answered.
func (s *Server) tagFromOwner(r *http.Request, req request) int {
	if s.cluster == nil || req.peer {
		return 0
	}
	self := s.cluster.Self().Name
	for _, n := range s.cluster.Owners(req.repo + ":" + req.ref) {
		if n.Name == self {
			return 0
		}
		resp, err := s.askPeer(r, http.MethodHead, n, req)
		if err != nil {
			s.log.WarnContext(r.Context(), "the owner of a tag did not answer; the next node in line is asked",
				"owner", n.Name, "repo", req.repo, "tag", req.ref, "err", err)
			continue
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	return 0
}

// peerDownFor is how long a node that could not be reached is passed over: as long as its
// heartbeats may still say it is live.
const peerDownFor = cluster.LiveFor

// peerDown says whether node failed lately (a connection refused or that timed out): its
// requests go to the next node in line at once, not after another timeout each.
func (s *Server) peerDown(node string) bool {
	s.peerMu.Lock()
	defer s.peerMu.Unlock()
	until, ok := s.peerFailed[node]
	return ok && time.Now().Before(until)
}

func (s *Server) markPeerDown(node string) {
	s.peerMu.Lock()
	defer s.peerMu.Unlock()
	if s.peerFailed == nil {
		s.peerFailed = map[string]time.Time{}
	}
	s.peerFailed[node] = time.Now().Add(peerDownFor)
}

// relayPeer writes the owner's status and headers of a blob answer.
func relayPeer(w http.ResponseWriter, resp *http.Response) {
	h := w.Header()
	for _, k := range []string{"Content-Type", "Content-Length", "Content-Range", "Docker-Content-Digest", "Etag", "Location",
		"X-Content-Type-Options", "Cache-Control", "Www-Authenticate", "Retry-After", "Cache-Status"} {
		if v := resp.Header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
}

func (s *Server) peerClient() *http.Client {
	if s.peers == nil {
		return http.DefaultClient
	}
	return s.peers
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// UploadPrefix is the start of the upload session ids of node name: its name in hex, so that
// any node finds where a session lives (cache.Config.UploadPrefix).
func UploadPrefix(name string) string { return hex.EncodeToString([]byte(name)) + "-" }

// toUploadNode sends a request for an upload session that another node holds to that node, and
// reports whether it answered: an upload started on one node is continued on another. The
// session's bytes stay on the node that holds it; a session whose node is gone is unknown.
func (s *Server) toUploadNode(w http.ResponseWriter, r *http.Request, rt route) (bool, error) {
	if s.cluster == nil {
		return false, nil
	}
	enc, _, ok := strings.Cut(rt.ref, "-")
	name, err := hex.DecodeString(enc)
	if !ok || err != nil || string(name) == s.cluster.Self().Name {
		return false, nil
	}
	var node *cluster.Node
	for _, n := range s.cluster.Owners("") {
		if n.Name == string(name) {
			node = &n
		}
	}
	if node == nil {
		return true, newError(http.StatusNotFound, CodeBlobUploadUnknown,
			"the upload was started on node %s, which is gone: start the push again", name)
	}
	if s.peerDown(node.Name) {
		return true, newError(http.StatusServiceUnavailable, CodeUnavailable,
			"the upload's node %s cannot be reached now: retry, or start the push again", name)
	}
	ctx, cancelUpload := context.WithCancel(r.Context())
	defer cancelUpload()
	out, err := http.NewRequestWithContext(ctx, r.Method, strings.TrimSuffix(node.Advertise, "/")+r.URL.RequestURI(), r.Body)
	if err != nil {
		return true, err
	}
	out.ContentLength = r.ContentLength
	for _, k := range []string{"Content-Type", "Content-Range", "Content-Length"} {
		if v := r.Header.Get(k); v != "" {
			out.Header.Set(k, v)
		}
	}
	s.cluster.Sign(out, node.Name)
	// A node that takes the body but never answers is cut by the peers' transport
	// (ResponseHeaderTimeout, counted once the body is sent); a stalled body by its idle timeout.
	resp, err := s.peerClient().Do(out)
	if err != nil {
		s.markPeerDown(string(name))
		return true, &Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
			Message: fmt.Sprintf("the upload's node %s does not answer: retry, or start the push again", name), Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("X-Cove-Node-Refused") != "" {
		s.log.ErrorContext(r.Context(), "a node of the fleet refused this node's signature: is cluster.secret the same on every node?", "node", string(name))
		return true, newError(http.StatusServiceUnavailable, CodeUnavailable,
			"the upload's node %s cannot be reached from this node now: retry, or start the push again", name)
	}
	h := w.Header()
	for _, k := range []string{"Location", "Range", "Docker-Upload-Uuid", "Docker-Content-Digest", "Content-Type",
		"Content-Length", "Oci-Chunk-Min-Length", "Retry-After"} {
		if v := resp.Header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
	return true, nil
}
