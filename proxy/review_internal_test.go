package proxy

// Regression tests from the review of the edge work (see review_test.go): the comments
// describe the bug each one caught, as it was.

import (
	"context"
	"testing"
	"time"
)

// TestReviewClockTryAfterExpiry: the Handler arms a retry's header deadline
// (exchangeClock.limitHeaders) before it makes the retry's context (exchangeClock.try),
// with the previous try's context already released (endTry). When the little time left
// runs out in between (the Handler only checks that some is left), the timer fires with no
// context to cancel: the clock records the expiry and stops watching, and the context try
// then returns is never cancelled. The retry runs unbounded by the clock, for up to the
// Transport's own response_header, the wait this clock exists to cap.
func TestReviewClockTryAfterExpiry(t *testing.T) {
	var c exchangeClock
	c.try(context.Background())
	c.endTry()                                       // the try failed; the Handler decides to retry
	c.limitHeaders(time.Now().Add(time.Millisecond)) // what is left of response_header
	time.Sleep(20 * time.Millisecond)                // the deadline passes before the new try starts
	ctx := c.try(context.Background())
	defer c.stop()
	defer c.endTry()
	select {
	case <-ctx.Done():
	case <-time.After(200 * time.Millisecond):
		t.Errorf("the clock expired (cut() = %v) but the retry's context is live: nothing bounds the retry", c.cut())
	}
}
