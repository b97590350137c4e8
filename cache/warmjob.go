package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"cove/internal/kv"
)

// Pre-warm jobs (issue #14): a job pulls a list of images into the mirror's cache ahead of the
// clients that will ask for them. The mirror does the pulling (mirror.Warmer); this is where a
// job and its progress are kept, in the metadata store, so that every node of a fleet shows the
// same jobs whichever node runs them.

// Warm job statuses, in Harbor's words for a job's status.
const (
	WarmPending = "Pending" // waiting for the job before it on its node
	WarmRunning = "Running"
	WarmSuccess = "Success" // every image is warm
	WarmError   = "Error"   // at least one image failed; the others may be warm
)

// Warm job kinds: started through the API (or the page), or by mirror.warm's schedule.
const (
	WarmManual   = "MANUAL"
	WarmSchedule = "SCHEDULE"
)

// WarmRequest asks for a warm job.
type WarmRequest struct {
	Kind     string // WarmManual or WarmSchedule
	Operator string // who asks: the audit log's user of the pulls; "system" for the schedule
	// Images are references as clients write them: alpine:3.20, ghcr.io/owner/image:tag.
	// Platforms (os/architecture[/variant]) choose among an index's images; empty: all.
	Images    []string
	Platforms []string
}

// WarmImage is one image of a job and what warming it took.
type WarmImage struct {
	// Image is the reference as given: alpine:3.20, ghcr.io/owner/image:tag, name@sha256:….
	Image string `json:"image"`
	// Digest is what the reference resolved to upstream; empty until its manifest is fetched.
	Digest string `json:"digest"`
	// Platforms are those of the index's images that were warmed (os/architecture[/variant]);
	// empty for an image that is not an index.
	Platforms []string `json:"platforms"`
	// Manifests counts the manifests warmed (an index and its chosen images); Blobs the configs
	// and layers, of which CachedBlobs were in the cache already; Bytes is the size of them all,
	// manifests included.
	Manifests   int   `json:"manifests"`
	Blobs       int   `json:"blobs"`
	CachedBlobs int   `json:"cached_blobs"`
	Bytes       int64 `json:"bytes"`
	Done        bool  `json:"done"`
	// Error says why the image is not warm (or not wholly); empty when it is.
	Error string `json:"error"`
}

// WarmJob is one pre-warm job.
type WarmJob struct {
	ID       int64  `json:"id"`
	Kind     string `json:"kind"`     // MANUAL or SCHEDULE
	Operator string `json:"operator"` // who started it; "system" for the schedule
	Status   string `json:"status"`
	// Platforms chooses the images of an index to warm; empty: all of them.
	Platforms []string    `json:"platforms"`
	Images    []WarmImage `json:"images"`
	Created   time.Time   `json:"creation_time"`
	Updated   time.Time   `json:"update_time"`
	Node      string      `json:"node,omitempty"` // the fleet node that runs it
}

// Ended reports whether the job has ended, well or not.
func (j WarmJob) Ended() bool { return j.Status == WarmSuccess || j.Status == WarmError }

var (
	// ErrWarmInvalid is a job that cannot be started as asked: no images, too many, a bad
	// reference or platform. Its message says which.
	ErrWarmInvalid = errors.New("invalid warm job")
	// ErrWarmUnknown means no job has that id (or it left the history).
	ErrWarmUnknown = errors.New("no such warm job")
	// ErrWarmBusy means too many jobs wait on this node already.
	ErrWarmBusy = errors.New("too many warm jobs are waiting")
)

const (
	keyWarmSeq    = "warm/seq"
	prefixWarmJob = "warm/job/"
	// WarmKeep is how many jobs the history keeps.
	WarmKeep = 50
)

func warmJobKey(id int64) []byte { return fmt.Appendf(nil, "%s%020d", prefixWarmJob, id) }

// WarmJobs keeps the pre-warm jobs and their progress in the metadata store. Create it with
// NewWarmJobs. It is safe for concurrent use; every method honours ctx.
type WarmJobs struct {
	st *Store
	db kv.DB
}

// NewWarmJobs returns the job store of st.
func NewWarmJobs(st *Store) *WarmJobs { return &WarmJobs{st: st, db: st.db} }

// Create records a new job, Pending, with its images not yet begun, and returns it with its id.
// The history keeps the last WarmKeep jobs: the one that falls out of it goes.
func (w *WarmJobs) Create(ctx context.Context, kind, operator, node string, images, platforms []string) (WarmJob, error) {
	if err := w.st.Disk.WriteCheck(); err != nil {
		return WarmJob{}, err
	}
	now := w.st.now().UTC()
	job := WarmJob{Kind: kind, Operator: operator, Status: WarmPending, Platforms: platforms, Created: now, Updated: now, Node: node}
	if job.Platforms == nil {
		job.Platforms = []string{}
	}
	for _, im := range images {
		job.Images = append(job.Images, WarmImage{Image: im, Platforms: []string{}})
	}
	err := kv.Retry(ctx, w.db, func(txn kv.Txn) error {
		var seq int64
		if err := kv.Get(txn, []byte(keyWarmSeq), &seq); err != nil && !errors.Is(err, kv.ErrNotFound) {
			return err
		}
		job.ID = seq + 1
		if err := kv.Put(txn, []byte(keyWarmSeq), job.ID); err != nil {
			return err
		}
		if old := job.ID - WarmKeep; old > 0 {
			if err := txn.Delete(warmJobKey(old)); err != nil {
				return err
			}
		}
		return kv.Put(txn, warmJobKey(job.ID), job)
	})
	if err != nil {
		return WarmJob{}, fmt.Errorf("record a warm job: %w", err)
	}
	return job, nil
}

// Save records job as it is now (its status and progress), stamped with the time. A job that
// left the history meanwhile is not written back.
func (w *WarmJobs) Save(ctx context.Context, job WarmJob) error {
	job.Updated = w.st.now().UTC()
	err := kv.Retry(ctx, w.db, func(txn kv.Txn) error {
		if _, err := txn.Get(warmJobKey(job.ID)); err != nil {
			return err
		}
		return kv.Put(txn, warmJobKey(job.ID), job)
	})
	if errors.Is(err, kv.ErrNotFound) {
		return nil
	}
	return err
}

// Job returns the job id, or ErrWarmUnknown.
func (w *WarmJobs) Job(ctx context.Context, id int64) (WarmJob, error) {
	var job WarmJob
	err := w.db.View(ctx, func(txn kv.Txn) error { return kv.Get(txn, warmJobKey(id), &job) })
	if errors.Is(err, kv.ErrNotFound) {
		err = ErrWarmUnknown
	}
	return job, err
}

// Jobs lists the jobs of the history, newest first.
func (w *WarmJobs) Jobs(ctx context.Context) ([]WarmJob, error) {
	out := []WarmJob{}
	err := w.db.View(ctx, func(txn kv.Txn) error {
		return txn.Scan([]byte(prefixWarmJob), kv.ScanOptions{Reverse: true}, func(_, val []byte) (bool, error) {
			var job WarmJob
			if err := json.Unmarshal(val, &job); err != nil {
				return false, err
			}
			out = append(out, job)
			return true, nil
		})
	})
	return out, err
}

// Interrupted ends the jobs that node left pending or running when it stopped: Error, each
// unfinished image saying so. It returns how many it ended. Call it at start, before the node
// starts jobs of its own; other nodes' jobs are theirs.
func (w *WarmJobs) Interrupted(ctx context.Context, node string) (int, error) {
	if w.st.Disk.readOnly {
		return 0, nil
	}
	n := 0
	err := kv.Retry(ctx, w.db, func(txn kv.Txn) error {
		n = 0
		var stale []WarmJob
		err := txn.Scan([]byte(prefixWarmJob), kv.ScanOptions{}, func(_, val []byte) (bool, error) {
			var job WarmJob
			if err := json.Unmarshal(val, &job); err != nil {
				return false, err
			}
			if !job.Ended() && job.Node == node {
				stale = append(stale, job)
			}
			return true, nil
		})
		if err != nil {
			return err
		}
		now := w.st.now().UTC()
		for _, job := range stale {
			job.Status, job.Updated = WarmError, now
			for i := range job.Images {
				if !job.Images[i].Done {
					job.Images[i].Done, job.Images[i].Error = true, "cove stopped before this image was warm"
				}
			}
			if err := kv.Put(txn, warmJobKey(job.ID), job); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}
