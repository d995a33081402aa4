package auth

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestLoginFloodFromOneSource: a source that failed failBurst logins is
// refused without a password check, a correct password included, while
// other sources log in; with credit back (one per failEvery) it logs in
// again.
func TestLoginFloodFromOneSource(t *testing.T) {
	a, err := NewFile(FileConfig{UsersFile: usersFile(t, "alice")})
	if err != nil {
		t.Fatal(err)
	}
	attacker := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 66), Port: 40000}
	other := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 40001}
	login := func(from net.Addr, pw string) error {
		_, err := a.Authenticate(context.Background(), Credentials{ClientID: "c", Username: "alice", HasUsername: true,
			Password: []byte(pw), HasPassword: true, Remote: from})
		return err
	}
	for i := 0; i < failBurst; i++ {
		if err := login(attacker, "wrong"); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("wrong password %d: %v", i, err)
		}
	}
	if err := login(attacker, "pw"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("a source past its failures logged in: %v", err)
	}
	if err := login(other, "pw"); err != nil {
		t.Fatalf("another source was refused: %v", err)
	}
	time.Sleep(failEvery + 100*time.Millisecond)
	if err := login(attacker, "pw"); err != nil {
		t.Fatalf("with credit back, the source was refused: %v", err)
	}
}

// TestPasswordChecksBounded: no more password checks run at once than the
// limiter allows; a check whose CONNECT's deadline passes while it waits
// for its turn is not run.
func TestPasswordChecksBounded(t *testing.T) {
	l := newLoginLimiter()
	var running, most atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = l.check(context.Background(), func() {
				n := running.Add(1)
				for {
					m := most.Load()
					if n <= m || most.CompareAndSwap(m, n) {
						break
					}
				}
				time.Sleep(5 * time.Millisecond)
				running.Add(-1)
			})
		}()
	}
	wg.Wait()
	if got := int(most.Load()); got < 1 || got > cap(l.checks) {
		t.Fatalf("%d checks ran at once, the limit is %d", got, cap(l.checks))
	}
	for i := 0; i < cap(l.checks); i++ {
		l.checks <- struct{}{} // every turn taken
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	ran := false
	if err := l.check(ctx, func() { ran = true }); !errors.Is(err, context.DeadlineExceeded) || ran {
		t.Fatalf("a check past its deadline: err %v, ran %v", err, ran)
	}
}
