package mqtt

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// poller watches the sockets of parked connections with one epoll set and
// one goroutine, and wakes a connection when its socket turns readable
// (data, the peer's FIN or a reset). Each socket is registered once, at its
// connection's first park, level-triggered and one-shot, then re-armed at
// each park: a socket that became readable before it was armed is reported
// at once, and an event wakes its connection once.
//
// The epoll data of a socket is a token, never a pointer: an event that
// arrives after its connection ended finds another token or none, and is
// dropped.
type poller struct {
	epfd int
	evfd int // an eventfd, token 0: stop

	// slots holds the connections that parked and have not ended; a
	// token is a slot's index (plus 1) and, above, a generation, so that
	// a slot's next tenant does not take its last one's events.
	mu    sync.Mutex
	slots []*conn
	free  []uint32
	gen   uint32

	done chan struct{}
	due  []*conn // the sweep's, reused
}

// sweepEvery is how often the poller wakes parked connections past their
// keep-alive deadline: they are closed up to this late.
const sweepEvery = time.Second

// Events a parked socket is armed for. EPOLLHUP and EPOLLERR are always
// reported.
const parkEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

func newPoller(log *slog.Logger) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		unix.Close(evfd)
		unix.Close(epfd)
		return nil, err
	}
	p := &poller{epfd: epfd, evfd: evfd, done: make(chan struct{})}
	go p.loop(log)
	return p, nil
}

func (p *poller) loop(log *slog.Logger) {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	next := time.Now().Add(sweepEvery)
	for {
		n, err := unix.EpollWait(p.epfd, events, max(int(time.Until(next)/time.Millisecond), 0)+1)
		if now := time.Now(); !now.Before(next) {
			p.sweep()
			next = now.Add(sweepEvery)
		}
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			// Not expected with valid arguments; parked connections would
			// be stranded, so say so loudly.
			log.Error("idle connection poller failed", "err", err)
			return
		}
		for i := range events[:n] {
			tok := uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32
			if tok == 0 {
				return
			}
			if c := p.lookup(tok); c != nil {
				c.wake()
			}
		}
	}
}

// sweep wakes the parked connections past their keep-alive deadline; the
// goroutine each gets times out its read. It looks at every connection
// that ever parked: O(n) a second, as mosquitto's keep-alive check; a
// timer wheel would look at the expiring ones only.
func (p *poller) sweep() {
	now := monoNow()
	p.mu.Lock()
	for _, c := range p.slots {
		if c == nil {
			continue
		}
		if dl := c.idle.deadline.Load(); dl != 0 && dl <= now && c.idle.state.Load() == parked {
			p.due = append(p.due, c)
		}
	}
	p.mu.Unlock()
	for i, c := range p.due {
		c.wake()
		p.due[i] = nil
	}
	p.due = p.due[:0]
}

// add gives c a token (c.idle.token, written under mu for lookup); its
// socket is registered at its first arm.
func (p *poller) add(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var i uint32
	if n := len(p.free); n > 0 {
		i = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		p.slots = append(p.slots, nil)
		i = uint32(len(p.slots) - 1)
	}
	p.slots[i] = c
	p.gen++
	c.idle.token = uint64(p.gen)<<32 | uint64(i+1) // never 0, the eventfd's
}

// lookup is the connection of a token; nil if it ended.
func (p *poller) lookup(tok uint64) *conn {
	i := uint32(tok) - 1
	p.mu.Lock()
	defer p.mu.Unlock()
	if int(i) >= len(p.slots) {
		return nil
	}
	if c := p.slots[i]; c != nil && c.idle.token == tok {
		return c
	}
	return nil
}

// forget drops an ended connection's token. Its socket left the epoll set
// when it was closed.
func (p *poller) forget(tok uint64) {
	i := uint32(tok) - 1
	p.mu.Lock()
	p.slots[i] = nil
	p.free = append(p.free, i)
	p.mu.Unlock()
}

// arm (re-)arms the socket for one readable event. It fails once the
// socket is closed.
func (p *poller) arm(rc syscall.RawConn, tok uint64) error {
	ev := unix.EpollEvent{Events: parkEvents, Fd: int32(uint32(tok)), Pad: int32(uint32(tok >> 32))}
	var err error
	cerr := rc.Control(func(fd uintptr) {
		// Control holds the descriptor open, so it cannot be closed and
		// its number reused meanwhile.
		err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
		if errors.Is(err, unix.ENOENT) {
			err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// stop ends the poller's goroutine and closes its descriptors; no
// connection may park any more.
func (p *poller) stop() {
	one := [8]byte{1} // an eventfd takes a native-endian uint64
	_, _ = unix.Write(p.evfd, one[:])
	<-p.done
	unix.Close(p.epfd)
	unix.Close(p.evfd)
}

// idlePoller is the server's poller, started by Start.
type idlePoller struct {
	p atomic.Pointer[poller]
}

// start starts the poller; without one, connections do not park.
func (ip *idlePoller) start(log *slog.Logger) {
	p, err := newPoller(log)
	if err != nil {
		log.Warn("idle connections keep a goroutine each: no epoll", "err", err)
		return
	}
	ip.p.Store(p)
}

func (ip *idlePoller) stop() {
	if p := ip.p.Swap(nil); p != nil {
		p.stop()
	}
}
