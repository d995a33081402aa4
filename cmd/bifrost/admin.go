package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bifrost-mq/bifrost/api"
	"github.com/bifrost-mq/bifrost/balancer/balancerpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

const adminUsage = `Usage: bifrost admin [--addr HOST:PORT] [--json] [--timeout D] [--cluster-tls-cert F --cluster-tls-key F --cluster-tls-ca F] COMMAND

Commands:
  cluster                                  members, roles, addresses and health
  ranges                                   id, keyspace, span, ver, replicas, leader, size
  kv get KEY                               read a key (exit 1 if absent)
  kv put KEY VALUE                         write a key
  kv del KEY                               delete a key
  kv cas KEY EXPECTED NEW [--absent]       write NEW if KEY holds EXPECTED (--absent: if KEY is absent; exit 1 on mismatch)
  kv scan [--start K] [--end K] [--limit N]
  add-replica --range ID --store ID        add a replica of a range on a store
  remove-replica --range ID --store ID     remove the range's replica from a store
  transfer-leader --range ID --store ID    move the range's leadership to a store
  split --range ID --key K                 split a range at K (or --keyspace S --key K: the range holding K)
  merge --range ID                         merge a range with its right neighbour
  balancer status|pause|resume             every store's balancer: state and recent moves; pause or resume all

Commands on sessions and messages call the HTTP API of a frontend or standalone
(--api-addr, default 127.0.0.1:8090; --api-token or --api-token-file; --tenant, default "default"):
  sessions list [--prefix P] [--limit N] [--cursor C]   sessions (persistent, and clean ones connected), paged
  sessions show CLIENT                     online or not, where, subscriptions, queued, in flight, expiry
  sessions kick CLIENT                     disconnect the client wherever it is connected
  retain get TOPIC | retain get --filter F [--limit N] [--cursor C]
  retain set TOPIC PAYLOAD [--qos N]       store a retained message (not published)
  retain clear TOPIC                       clear a topic's retained message
  pub TOPIC PAYLOAD [--qos N] [--retain] [--base64] [--content-type T] [--response-topic T]
      [--correlation-data D] [--user-property K=V]... [--message-expiry S] [--payload-format 0|1]
  sub add CLIENT FILTER [--qos N] [--no-local] [--retain-as-published] [--subscription-id N]
                                           subscribe an offline persistent session
  sub remove CLIENT FILTER                 unsubscribe an offline persistent session
`

type adminCmd struct {
	addr    string
	json    bool
	timeout time.Duration
	rangeID uint64
	storeID uint64
	start   string
	end     string
	limit   uint
	absent  bool
	key     string
	ks      string
	api     apiArgs
	tls     clusterTLSFlags
	out     io.Writer
}

func runAdmin(args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("admin", stderr)
	a := &adminCmd{out: stdout}
	fs.StringVar(&a.addr, "addr", "127.0.0.1:7948", "gRPC address of any store")
	fs.BoolVar(&a.json, "json", false, "print JSON instead of a table")
	fs.DurationVar(&a.timeout, "timeout", 15*time.Second, "time limit of the call")
	fs.Uint64Var(&a.rangeID, "range", 0, "range ID")
	fs.Uint64Var(&a.storeID, "store", 0, "store ID")
	fs.StringVar(&a.start, "start", "", "scan: first key")
	fs.StringVar(&a.end, "end", "", "scan: end key, exclusive (empty: the end)")
	fs.UintVar(&a.limit, "limit", 100, "kv scan, sessions list, retain get --filter: at most this many (max 1000)")
	fs.BoolVar(&a.absent, "absent", false, "cas: expect the key to be absent")
	fs.StringVar(&a.key, "key", "", "split: the split key")
	fs.StringVar(&a.ks, "keyspace", "", "split: find the range by keyspace (kv, dist, inbox, retain) and key")
	a.api.register(fs)
	a.tls.register(fs, "the admin command")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, adminUsage)
			return err
		}
		return usagef("bifrost admin: %v", err)
	}
	if err := applyEnv(fs); err != nil {
		return usagef("bifrost admin: %v", err)
	}
	if len(pos) == 0 {
		return usagef("bifrost admin: missing command (cluster, ranges, kv, add-replica, remove-replica, transfer-leader, split, merge, balancer, sessions, retain, pub, sub)")
	}
	if _, ok := apiCommands[pos[0]]; ok {
		if err := a.checkAPIArgs(pos); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		defer cancel()
		return a.runAPI(ctx, pos)
	}
	if err := a.checkArgs(pos); err != nil {
		return err
	}
	creds, err := a.tls.load()
	if err != nil {
		return usagef("bifrost admin: %v", err)
	}
	client, err := ranges.DialTLS(a.addr, creds)
	if err != nil {
		return err
	}
	if creds == nil {
		// A TLS cluster drops a plaintext client before it says why.
		defer func() {
			if errors.Is(err, ranges.ErrUnavailable) {
				err = fmt.Errorf("%w (a cluster with -cluster-tls-* needs them on admin too)", err)
			}
		}()
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	switch pos[0] {
	case "cluster":
		return a.cluster(ctx, client)
	case "ranges":
		return a.ranges(ctx, client)
	case "kv":
		return a.kv(ctx, client, pos[1:])
	case "add-replica":
		resp, err := client.Admin.AddReplica(ctx, &rangespb.AddReplicaRequest{RangeId: a.rangeID, StoreId: a.storeID})
		return a.printChange(resp, err)
	case "remove-replica":
		resp, err := client.Admin.RemoveReplica(ctx, &rangespb.RemoveReplicaRequest{RangeId: a.rangeID, StoreId: a.storeID})
		return a.printChange(resp, err)
	case "split":
		resp, err := client.Admin.Split(ctx, &rangespb.SplitRequest{RangeId: a.rangeID, Keyspace: a.ks, Key: []byte(a.key)})
		if err != nil {
			return ranges.FromStatus(err)
		}
		l, r := api.RangeOf(&rangespb.RangeInfo{Range: resp.Left}), api.RangeOf(&rangespb.RangeInfo{Range: resp.Right})
		if a.json {
			return a.printJSON(map[string]any{"left": l, "right": r})
		}
		fmt.Fprintf(a.out, "range %d: [%q, %q) ver %d\nrange %d: [%q, %q) ver %d\n", l.ID, l.Start, l.End, l.Ver, r.ID, r.Start, r.End, r.Ver)
		return nil
	case "merge":
		resp, err := client.Admin.Merge(ctx, &rangespb.MergeRequest{RangeId: a.rangeID})
		if err != nil {
			return ranges.FromStatus(err)
		}
		m := api.RangeOf(&rangespb.RangeInfo{Range: resp.Range})
		if a.json {
			return a.printJSON(m)
		}
		fmt.Fprintf(a.out, "range %d: [%q, %q) ver %d\n", m.ID, m.Start, m.End, m.Ver)
		return nil
	case "balancer":
		return a.balancer(ctx, client, pos[1])
	case "transfer-leader":
		if _, err := client.Admin.TransferLeader(ctx, &rangespb.TransferLeaderRequest{RangeId: a.rangeID, StoreId: a.storeID}); err != nil {
			return ranges.FromStatus(err)
		}
		if a.json {
			return a.printJSON(map[string]any{"range": a.rangeID, "leader_store": a.storeID})
		}
		fmt.Fprintf(a.out, "range %d is now led by store %d\n", a.rangeID, a.storeID)
		return nil
	}
	return usagef("bifrost admin: unknown command %q", pos[0])
}

// checkArgs validates the command line before any connection is made.
func (a *adminCmd) checkArgs(pos []string) error {
	if pos[0] == "balancer" {
		if len(pos) != 2 || (pos[1] != "status" && pos[1] != "pause" && pos[1] != "resume") {
			return usagef("bifrost admin balancer: want status, pause or resume")
		}
		return nil
	}
	want := map[string]int{"cluster": 0, "ranges": 0, "add-replica": 0, "remove-replica": 0, "transfer-leader": 0, "split": 0, "merge": 0}
	if n, ok := want[pos[0]]; ok {
		if len(pos)-1 != n {
			return usagef("bifrost admin %s: unexpected argument %q", pos[0], pos[1])
		}
		switch pos[0] {
		case "split":
			if a.key == "" || (a.rangeID == 0) == (a.ks == "") {
				return usagef("bifrost admin split: want --key and one of --range or --keyspace")
			}
			return nil
		case "merge":
			if a.rangeID == 0 {
				return usagef("bifrost admin merge: --range is required")
			}
			return nil
		}
		if strings.Contains(pos[0], "-") && (a.rangeID == 0 || a.storeID == 0) {
			return usagef("bifrost admin %s: --range and --store are required", pos[0])
		}
		return nil
	}
	if pos[0] != "kv" {
		return usagef("bifrost admin: unknown command %q", pos[0])
	}
	if len(pos) < 2 {
		return usagef("bifrost admin kv: missing subcommand (get, put, del, cas, scan)")
	}
	args := map[string]int{"get": 1, "put": 2, "del": 1, "cas": 3, "scan": 0}
	n, ok := args[pos[1]]
	if !ok {
		return usagef("bifrost admin kv: unknown subcommand %q (want get, put, del, cas or scan)", pos[1])
	}
	if pos[1] == "cas" && a.absent {
		n = 2
	}
	if len(pos)-2 != n {
		return usagef("bifrost admin kv %s: want %d argument(s), got %d", pos[1], n, len(pos)-2)
	}
	if a.limit == 0 || a.limit > 1000 {
		return usagef("bifrost admin kv scan: --limit must be 1 to 1000")
	}
	return nil
}

func (a *adminCmd) printJSON(v any) error {
	enc := json.NewEncoder(a.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (a *adminCmd) cluster(ctx context.Context, c *ranges.Client) error {
	resp, err := c.Admin.Cluster(ctx, &rangespb.ClusterRequest{})
	if err != nil {
		return ranges.FromStatus(err)
	}
	if a.json {
		out := []api.Member{}
		for _, m := range resp.Members {
			out = append(out, api.MemberOf(m))
		}
		return a.printJSON(out)
	}
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTORE\tROLE\tGOSSIP\tGRPC\tRAFT\tSTATE")
	for _, m := range resp.Members {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.StoreId, m.Role, m.GossipAddr, m.GrpcAddr, m.RaftAddr, m.State)
	}
	return tw.Flush()
}

func (a *adminCmd) ranges(ctx context.Context, c *ranges.Client) error {
	resp, err := c.Admin.Ranges(ctx, &rangespb.RangesRequest{})
	if err != nil {
		return ranges.FromStatus(err)
	}
	out := []api.Range{}
	for _, info := range resp.Ranges {
		out = append(out, api.RangeOf(info))
	}
	if a.json {
		return a.printJSON(out)
	}
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKEYSPACE\tSPAN\tVER\tREPLICAS (store)\tLEADER\tSIZE")
	for _, r := range out {
		end := r.End
		if end == "" {
			end = "∞"
		}
		reps := make([]string, len(r.Replicas))
		for i, s := range r.Replicas {
			reps[i] = s.String()
		}
		leader := "-"
		if r.Leader != 0 {
			leader = r.Leader.String()
		}
		fmt.Fprintf(tw, "%d\t%s\t[%q, %s)\t%d\t%s\t%s\t%d\n", r.ID, r.Keyspace, r.Start, end, r.Ver, strings.Join(reps, ","), leader, r.Size)
	}
	return tw.Flush()
}

func (a *adminCmd) printChange(resp *rangespb.ChangeReplicasResponse, err error) error {
	if err != nil {
		return ranges.FromStatus(err)
	}
	r := api.RangeOf(&rangespb.RangeInfo{Range: resp.Range})
	if a.json {
		return a.printJSON(r)
	}
	fmt.Fprintf(a.out, "range %d: conf_ver %d, replicas on stores %v\n", r.ID, r.ConfVer, r.Replicas)
	return nil
}

func (a *adminCmd) kv(ctx context.Context, c *ranges.Client, args []string) error {
	switch args[0] {
	case "get":
		v, found, err := c.Get(ctx, []byte(args[1]))
		if err != nil {
			return err
		}
		if a.json {
			if err := a.printJSON(map[string]any{"key": args[1], "value": api.Printable(v), "found": found}); err != nil {
				return err
			}
		} else if found {
			fmt.Fprintln(a.out, api.Printable(v))
		}
		if !found {
			return &exitError{code: 1, msg: fmt.Sprintf("key %q not found", args[1])}
		}
		return nil
	case "put":
		if err := c.Put(ctx, []byte(args[1]), []byte(args[2])); err != nil {
			return err
		}
		return a.done(map[string]any{"key": args[1], "ok": true})
	case "del":
		if err := c.Delete(ctx, []byte(args[1])); err != nil {
			return err
		}
		return a.done(map[string]any{"key": args[1], "ok": true})
	case "cas":
		var expected []byte
		newValue := args[len(args)-1]
		if !a.absent {
			expected = []byte(args[2])
		}
		ok, cur, err := c.CompareAndSwap(ctx, []byte(args[1]), expected, []byte(newValue))
		if err != nil {
			return err
		}
		if a.json {
			if err := a.printJSON(map[string]any{"key": args[1], "succeeded": ok, "current": api.Printable(cur), "found": cur != nil}); err != nil {
				return err
			}
		}
		if !ok {
			msg := fmt.Sprintf("cas failed: key %q is absent", args[1])
			if cur != nil {
				msg = fmt.Sprintf("cas failed: key %q holds %q", args[1], api.Printable(cur))
			}
			return &exitError{code: 1, msg: msg}
		}
		if !a.json {
			fmt.Fprintln(a.out, "ok")
		}
		return nil
	case "scan":
		resp, err := c.KV.Scan(ctx, &rangespb.ScanRequest{Start: []byte(a.start), End: []byte(a.end), Limit: uint32(a.limit)})
		if err != nil {
			return ranges.FromStatus(err)
		}
		if a.json {
			pairs := []map[string]string{}
			for _, p := range resp.Pairs {
				pairs = append(pairs, map[string]string{"key": api.Printable(p.Key), "value": api.Printable(p.Value)})
			}
			return a.printJSON(map[string]any{"pairs": pairs, "more": resp.More, "next_key": api.Printable(resp.NextKey)})
		}
		tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tVALUE")
		for _, p := range resp.Pairs {
			fmt.Fprintf(tw, "%s\t%s\n", api.Printable(p.Key), api.Printable(p.Value))
		}
		if resp.More {
			fmt.Fprintf(tw, "(more: continue with --start %q)\n", api.Printable(resp.NextKey))
		}
		return tw.Flush()
	}
	return usagef("bifrost admin kv: unknown subcommand %q", args[0])
}

func (a *adminCmd) done(v map[string]any) error {
	if a.json {
		return a.printJSON(v)
	}
	fmt.Fprintln(a.out, "ok")
	return nil
}

func (a *adminCmd) balancer(ctx context.Context, c *ranges.Client, verb string) error {
	bc := balancerpb.NewBalancerClient(c.Conn())
	var stores []*balancerpb.StoreStatus
	if verb == "status" {
		resp, err := bc.Status(ctx, &balancerpb.StatusRequest{})
		if err != nil {
			return ranges.FromStatus(err)
		}
		stores = resp.Stores
	} else {
		resp, err := bc.Control(ctx, &balancerpb.ControlRequest{Pause: verb == "pause"})
		if err != nil {
			return ranges.FromStatus(err)
		}
		stores = resp.Stores
	}
	sort.Slice(stores, func(i, j int) bool { return stores[i].StoreId < stores[j].StoreId })
	if a.json {
		out := []api.BalancerStore{}
		for _, s := range stores {
			out = append(out, api.BalancerStoreOf(s))
		}
		return a.printJSON(out)
	}
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STORE\tPAUSED\tREPLICAS\tLEADERS\tLAST MOVE")
	for _, s := range stores {
		last := "-"
		if s.Error != "" {
			last = "unreachable: " + s.Error
		} else if n := len(s.Recent); n > 0 {
			d := s.Recent[n-1]
			last = time.UnixMilli(d.UnixMs).Format(time.TimeOnly) + " " + d.Action
			if d.Error != "" {
				last += " (failed: " + d.Error + ")"
			}
		}
		fmt.Fprintf(tw, "%d\t%v\t%d\t%d\t%s\n", s.StoreId, s.Paused, s.Replicas, s.Leaders, last)
	}
	return tw.Flush()
}
