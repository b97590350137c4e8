package cache

import (
	"context"
	"errors"
	"slices"
	"testing"
)

func TestWarmJobsKeepTheirProgressAndABoundedHistory(t *testing.T) {
	ctx := context.Background()
	s, reopen := newStore(t)
	jobs := NewWarmJobs(s)

	first, err := jobs.Create(ctx, WarmManual, "admin", "", []string{"alpine:3.20", "ghcr.io/o/i:1"}, []string{"linux/amd64"})
	if err != nil {
		t.Fatal(err)
	}
	if first.ID != 1 || first.Status != WarmPending || len(first.Images) != 2 || first.Images[1].Image != "ghcr.io/o/i:1" {
		t.Fatalf("Create = %+v, want job 1, Pending, with its two images", first)
	}
	first.Status = WarmRunning
	first.Images[0].Blobs, first.Images[0].Bytes, first.Images[0].Done = 3, 12345, true
	if err := jobs.Save(ctx, first); err != nil {
		t.Fatal(err)
	}
	got, err := jobs.Job(ctx, 1)
	if err != nil || got.Status != WarmRunning || got.Images[0].Bytes != 12345 || !got.Images[0].Done || got.Images[1].Done {
		t.Fatalf("Job(1) = %+v, %v; want the saved progress", got, err)
	}
	if !got.Updated.After(first.Created) && !got.Updated.Equal(first.Created) {
		t.Errorf("Updated %v before Created %v", got.Updated, first.Created)
	}
	if _, err := jobs.Job(ctx, 99); !errors.Is(err, ErrWarmUnknown) {
		t.Errorf("Job(99) = %v, want ErrWarmUnknown", err)
	}

	// The history keeps the last WarmKeep jobs, newest first; ids keep counting.
	for range WarmKeep + 4 {
		if _, err := jobs.Create(ctx, WarmSchedule, "system", "", []string{"busybox"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	list, err := jobs.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != WarmKeep {
		t.Fatalf("Jobs = %d jobs, want the last %d", len(list), WarmKeep)
	}
	if list[0].ID != WarmKeep+5 || list[len(list)-1].ID != 6 {
		t.Errorf("Jobs = ids %d … %d, want %d … 6 (newest first)", list[0].ID, list[len(list)-1].ID, WarmKeep+5)
	}
	if _, err := jobs.Job(ctx, 1); !errors.Is(err, ErrWarmUnknown) {
		t.Errorf("job 1 out of the history: Job(1) = %v, want ErrWarmUnknown", err)
	}
	// A job that left the history while it ran is not written back.
	if err := jobs.Save(ctx, first); err != nil {
		t.Fatal(err)
	}
	if _, err := jobs.Job(ctx, 1); !errors.Is(err, ErrWarmUnknown) {
		t.Errorf("Save brought job 1 back into the history")
	}

	// A restart ends what this node left unfinished, and only that.
	mine := list[0]
	mine.Status, mine.Images[0].Done = WarmRunning, false
	if err := jobs.Save(ctx, mine); err != nil {
		t.Fatal(err)
	}
	other, err := jobs.Create(ctx, WarmManual, "admin", "node-b", []string{"alpine"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s = reopen()
	jobs = NewWarmJobs(s)
	n, err := jobs.Interrupted(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	// Every job of the history but node-b's was left Pending (or Running): all are this node's.
	if n != WarmKeep-1 {
		t.Errorf("Interrupted = %d, want %d (every unfinished job of this node)", n, WarmKeep-1)
	}
	got, _ = jobs.Job(ctx, mine.ID)
	if got.Status != WarmError || !got.Images[0].Done || got.Images[0].Error == "" {
		t.Errorf("interrupted job = %+v, want Error with its image saying why", got)
	}
	if got, _ := jobs.Job(ctx, other.ID); got.Status != WarmPending {
		t.Errorf("another node's job = %s, want it left Pending", got.Status)
	}
	list, _ = jobs.Jobs(ctx)
	if !slices.ContainsFunc(list, func(j WarmJob) bool { return j.ID == other.ID }) || list[0].ID != other.ID {
		t.Errorf("the newest job is not listed first")
	}
}
