package schemas_test

import (
	"context"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/schemas"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// TestWaitInserts: WaitInserts returns only after an INSERT that began
// before its time has ended, and does not wait for one that began later.
func TestWaitInserts(t *testing.T) {
	db := chtest.NewDB(t, false)
	ctx := context.Background()
	if err := db.Conn.Exec(ctx, "CREATE TABLE slow (x UInt8) ENGINE = Memory"); err != nil {
		t.Fatal(err)
	}
	done := make(chan time.Time, 1)
	go func() {
		// About two seconds: one sleep(1) per row, in blocks of one row.
		err := db.Conn.Exec(ctx, "INSERT INTO slow SELECT sleep(1) FROM numbers(2) SETTINGS max_block_size = 1")
		if err != nil {
			t.Error(err)
		}
		done <- time.Now()
	}()
	time.Sleep(300 * time.Millisecond) // the INSERT is running
	if err := schemas.WaitInserts(ctx, db.Conn, time.Now()); err != nil {
		t.Fatal(err)
	}
	// Began 0.3 s before the cutoff: waited for.
	select {
	case <-done:
	default:
		t.Fatal("WaitInserts returned while an INSERT that began before its time was running")
	}
	// One that begins after the cutoff (plus margin) is not waited for.
	go func() {
		_ = db.Conn.Exec(ctx, "INSERT INTO slow SELECT sleep(1) FROM numbers(2) SETTINGS max_block_size = 1")
		done <- time.Now()
	}()
	cutoff := time.Now().Add(-2 * time.Second)
	time.Sleep(300 * time.Millisecond)
	began := time.Now()
	if err := schemas.WaitInserts(ctx, db.Conn, cutoff); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(began); waited > time.Second {
		t.Errorf("WaitInserts waited %v for an INSERT that began after its time", waited)
	}
	<-done
}
