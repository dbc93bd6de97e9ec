package fleet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// A session: one connection to etcd, from the membership and a whole read
// to the watch and the publishing, until something fails; Run starts the
// next one, backing off.

func (n *Node) setStatus(connected bool, why string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.status.Connected != connected {
		n.status.Since = n.cfg.Now()
	}
	n.status.Connected, n.status.Why = connected, why
}

// Run works with etcd until ctx ends: it connects, and after every failure
// connects again, backing off, reading the fleet whole each time.
func (n *Node) Run(ctx context.Context) {
	wait := backoffMin
	for ctx.Err() == nil {
		began := time.Now()
		err := n.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, context.DeadlineExceeded) {
			// gRPC retries what fails under it and says only that time ran
			// out: ask the endpoints directly what is wrong.
			err = fmt.Errorf("%w (%v)", err, n.diagnose())
		}
		n.setStatus(false, err.Error())
		n.cfg.Log.Warn("the fleet is out of reach; this host keeps protecting itself and tries again",
			"endpoints", n.cfg.Endpoints, "err", err, "retry_in", wait)
		if time.Since(began) > backoffMax {
			wait = backoffMin // it worked for a while: start over
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, backoffMax)
	}
}

// diagnose says why the endpoints do not answer: a refused connection, a
// TLS handshake failure, a certificate etcd refuses.
func (n *Node) diagnose() error {
	var errs []error
	for _, e := range n.cfg.Endpoints {
		if err := probe(e, n.cfg.TLS); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e, err))
		}
	}
	if len(errs) == 0 {
		return errors.New("the endpoints answer, but not in time")
	}
	return errors.Join(errs...)
}

// probe connects to an endpoint as the client would.
func probe(endpoint string, cfg *tls.Config) error {
	u, err := url.Parse(endpoint)
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if u.Scheme != "https" {
		return nil
	}
	c := cfg.Clone()
	if c == nil {
		c = &tls.Config{}
	}
	c.ServerName = u.Hostname()
	c.NextProtos = []string{"h2"}
	tc := tls.Client(conn, c)
	_ = tc.SetDeadline(time.Now().Add(2 * time.Second))
	if err := tc.Handshake(); err != nil {
		return err
	}
	// A server that refuses the client's certificate says so after the
	// handshake (TLS 1.3): read what it sends first.
	_ = tc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := tc.Read(make([]byte, 1)); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return err
	}
	return nil
}

// watchWindow is how much etcd may send a member ahead of its reading:
// a burst of the fleet's blocks, far more than one watch response.
const watchWindow = 1 << 20

func (n *Node) client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints: n.cfg.Endpoints, DialTimeout: opTimeout, TLS: n.cfg.TLS,
		Username: n.cfg.Username, Password: n.cfg.Password,
		// etcd refuses pings more often than every 5 s; a silent peer is
		// then noticed within 10, a busy one (a loaded etcd) is given time.
		DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 5 * time.Second,
		// Fixed windows: gRPC's default measures the link with a ping for
		// each burst it receives, and a member's watch is a stream of
		// small bursts, so every delivery paid for a ping and its ack.
		DialOptions: []grpc.DialOption{grpc.WithInitialWindowSize(watchWindow), grpc.WithInitialConnWindowSize(watchWindow)},
		Logger:      zap.NewNop(),
	})
}

// session is one connection: membership, a whole read, then the watch,
// until something fails.
func (n *Node) session(ctx context.Context) error {
	cli, err := n.client()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	member, joined, joinRev, err := n.join(ctx, cli)
	if err != nil {
		n.countError("member")
		return err
	}
	defer func() {
		// A node that stops leaves at once rather than when its lease ends;
		// its blocks stay, on leases of their own.
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = cli.Revoke(c, member)
	}()
	rev := n.resumeFrom(joinRev)
	if rev == 0 {
		if rev, err = n.read(ctx, cli); err != nil {
			n.countError("read")
			return err
		}
	}
	n.setStatus(true, "")
	n.cfg.Log.Info("joined the fleet", "node", n.cfg.Node, "revision", rev, "endpoints", n.cfg.Endpoints)
	signal(n.ownSet) // a round of the last session may have failed half-way

	w := &writes{leases: map[int64]clientv3.LeaseID{}, pending: map[netip.Prefix]pendingWrite{}}
	errs := make(chan error, 4)
	go func() { errs <- n.keepMember(ctx, cli, member, joined) }()
	go func() { errs <- watchConnection(ctx, cli) }()
	go func() { errs <- n.follow(ctx, cli, rev) }()
	go func() { errs <- n.publish(ctx, cli, w) }()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-errs:
		return err
	}
}

// watchConnection ends the session when the client's connection to etcd
// fails: the client would retry behind the node's back, and the node
// would claim a connection it has not. A connection that stays failed
// for a moment (not a blip while it reconnects) is lost.
func watchConnection(ctx context.Context, cli *clientv3.Client) error {
	conn := cli.ActiveConnection()
	var failedSince time.Time
	for {
		state := conn.GetState()
		switch state {
		case connectivity.TransientFailure, connectivity.Shutdown:
			if failedSince.IsZero() {
				failedSince = time.Now()
			}
			if time.Since(failedSince) > time.Second {
				return fmt.Errorf("the connection to etcd failed (%s)", state)
			}
		default:
			failedSince = time.Time{}
		}
		wait, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
		conn.WaitForStateChange(wait, state)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}
