package main

import "testing"

// A push refused blob by blob is one quota event a minute per project and kind, not one a blob.
func TestQuotaEventsOnceAMinute(t *testing.T) {
	q := &quotaEvents{}
	if !q.first("p\x00exceeded") || q.first("p\x00exceeded") {
		t.Error("a second refusal within the minute is sent again, or the first is not")
	}
	if !q.first("p\x00warning") || !q.first("other\x00exceeded") {
		t.Error("another kind or project waits for the first's minute")
	}
}
