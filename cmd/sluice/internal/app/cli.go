// Package app is the sluice command: flag parsing, configuration and the
// wiring of services into one process. Service logic lives in the service
// modules; this package only assembles them.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"runtime/debug"
	"sluice.dev/crmsim"
	"sluice.dev/mesh/config"
	"sluice.dev/mesh/version"
)

// Version is what `sluice --version` prints: the same as every service's
// micro version. The build sets the commit with
// -ldflags "-X sluice.dev/mesh/version.Commit=…".
var Version = version.String()

// Main runs the command line and returns the exit code.
func Main(args []string) int {
	root := newRoot(os.Stdout, os.Stderr)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "sluice:", err)
		if errors.Is(err, config.ErrInvalid) || errors.Is(err, errUsage) {
			return 2
		}
		if isFindings(err) {
			return exitFindings
		}
		return 1
	}
	return 0
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "sluice",
		Short: "Sluice streams product events to the CRM in order per key, and never loses one",
		Long: "Sluice streams product events to the CRM over HTTP in order per key, never losing one,\n" +
			"as a NATS JetStream microservice mesh. `sluice run` with no config starts everything on\n" +
			"embedded defaults (embedded JetStream, SQLite sample product DB, CRM simulator, demo producer).",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(runCmd(stderr), crmsimCmd(stderr), configCmd(stdout))
	root.AddCommand(parkedCmd())
	root.AddCommand(statusCmd(), pauseCmd(), resumeCmd())
	root.AddCommand(replayCmd(), auditCmd(), traceCmd())
	root.AddCommand(crmIDsCmd())
	root.AddCommand(backfillCmd())
	root.AddCommand(importCmd())
	root.AddCommand(partitionsCmd())
	root.AddCommand(tryCmd(), initCmd())
	argsWithUsage(root)
	return root
}

// errUsage marks a command called with the wrong arguments; Main exits 2.
var errUsage = errors.New("usage")

// argsWithUsage wraps every command's argument check so that a wrong
// argument count says how to call the command (cobra alone prints only
// "accepts 1 arg(s), received 0").
func argsWithUsage(c *cobra.Command) {
	for _, sub := range c.Commands() {
		argsWithUsage(sub)
	}
	check := c.Args
	if check == nil {
		return
	}
	c.Args = func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return fmt.Errorf("%w\n%w: %s\nRun '%s --help' for more", err, errUsage, cmd.UseLine(), cmd.CommandPath())
		}
		return nil
	}
}

func newLogger(c LogConfig, w io.Writer) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(c.Level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	if c.Format == "console" {
		// Colours only on a terminal: a log redirected to a file or a pipe
		// must not carry ANSI escape codes.
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05", NoColor: !isTerminal(w)}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func runCmd(stderr io.Writer) *cobra.Command {
	var cfgPath, target string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run Sluice services (all in one process by default)",
		Example: "  sluice run                         # everything, embedded defaults\n" +
			"  sluice run --config sluice.yaml --target dispatcher",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(Targets, target) {
				return fmt.Errorf("%w: --target %q is not one of %s", config.ErrInvalid, target, strings.Join(Targets, ", "))
			}
			if target != "all" && os.Getenv(EnvPrefix+"NATS_URL") == "" && cfgPath == "" {
				fmt.Fprintln(stderr, "note: a single target with no nats.url starts its own embedded NATS; set nats.url to join a mesh")
			}
			c, err := LoadConfig(cfgPath, target)
			if err != nil {
				return err
			}
			log := newLogger(c.Log, stderr)
			applyRuntime(c.Runtime, log)
			ctx, stop := signalContext()
			defer stop()
			return Run(ctx, c, target, log)
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "YAML config file (env SLUICE_* overrides it)")
	cmd.Flags().StringVarP(&target, "target", "t", "all", "service to run: "+strings.Join(Targets, "|"))
	return cmd
}

func crmsimCmd(stderr io.Writer) *cobra.Command {
	var c crmsim.Config
	cmd := &cobra.Command{
		Use:   "crmsim",
		Short: "Run the CRM simulator alone (failure injection, request record, order check)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c = c.WithDefaults()
			if err := c.Validate(); err != nil {
				return fmt.Errorf("%w: %w", config.ErrInvalid, err)
			}
			log := newLogger(LogConfig{Level: "info", Format: "console"}, stderr)
			sim, err := crmsim.New(c, log)
			if err != nil {
				return err
			}
			ctx, stop := signalContext()
			defer stop()
			if err := sim.Start(ctx); err != nil {
				return err
			}
			log.Info().Str("url", sim.URL()).Msg("CRM simulator listening; control API under /_sim/")
			fmt.Fprintln(cmd.OutOrStdout(), sim.URL())
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return sim.Stop(sctx)
		},
	}
	cmd.Flags().StringVar(&c.Addr, "addr", "127.0.0.1:8099", "listen address")
	cmd.Flags().Float64Var(&c.ErrorRate, "error-rate", 0, "fraction of requests answered 503")
	cmd.Flags().DurationVar(&c.Latency, "latency", 0, "added latency per request")
	cmd.Flags().DurationVar(&c.Jitter, "jitter", 0, "random extra latency up to this")
	cmd.Flags().StringVar(&c.StateFile, "state-file", "", "keep the created records (CRM ids) in this file across restarts")
	return cmd
}

func configCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Inspect configuration"}
	var cfgPath, target string
	check := &cobra.Command{
		Use:   "check",
		Short: "Load and validate the configuration (exit 2 naming the bad key)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(Targets, target) {
				return fmt.Errorf("%w: --target %q is not one of %s", config.ErrInvalid, target, strings.Join(Targets, ", "))
			}
			c, err := LoadConfig(cfgPath, target)
			if err != nil {
				return err
			}
			if _, err := loadCatalog(c.Catalog); err != nil {
				return fmt.Errorf("%w: %w", config.ErrInvalid, err)
			}
			fmt.Fprintln(stdout, "configuration OK")
			// The mapping tests beside the catalog (<schemas_dir>/tests/).
			ctx, stop := signalContext()
			defer stop()
			return runMappingTests(ctx, stdout, c)
		},
	}
	check.Flags().StringVarP(&cfgPath, "config", "c", "", "YAML config file")
	check.Flags().StringVarP(&target, "target", "t", "all", "target to validate for")
	print := &cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration (defaults + file + env) as YAML",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := LoadConfig(cfgPath, "all")
			if err != nil {
				return err
			}
			return printConfig(stdout, c)
		},
	}
	print.Flags().StringVarP(&cfgPath, "config", "c", "", "YAML config file")
	env := &cobra.Command{
		Use:   "env",
		Short: "List every key that a SLUICE_* environment variable can override",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := Config{}
			for _, f := range config.Fields(EnvPrefix, &c) {
				fmt.Fprintf(stdout, "%-45s %s\n", f.Key, f.Env)
			}
			return nil
		},
	}
	cmd.AddCommand(check, print, env)
	return cmd
}

// redacted returns c with every secret replaced: the NATS password, token
// and URL password, CRM headers and auth secrets, ingest tokens and a
// product database DSN that carries credentials.
func redacted(c Config) Config {
	c.NATS = c.NATS.redacted()
	if len(c.Dispatcher.CRM.Headers) > 0 {
		h := make(map[string]string, len(c.Dispatcher.CRM.Headers))
		for k := range c.Dispatcher.CRM.Headers {
			h[k] = "<redacted>"
		}
		c.Dispatcher.CRM.Headers = h
	}
	// CRM auth secrets (the simulator's are its public demo values).
	for _, v := range []*string{&c.Dispatcher.CRM.Auth.Password, &c.Dispatcher.CRM.Auth.OAuth2.ClientSecret,
		&c.Dispatcher.CRM.Auth.OAuth2.RefreshToken} {
		if *v != "" {
			*v = "<redacted>"
		}
	}
	if len(c.Ingest.Tokens) > 0 {
		toks := slices.Clone(c.Ingest.Tokens)
		for i := range toks {
			toks[i].Token = "<redacted>"
		}
		c.Ingest.Tokens = toks
	}
	for _, db := range []*string{&c.Enricher.DB.DSN, &c.Inbound.DB.DSN} {
		if strings.ContainsAny(*db, "@=") && !strings.HasSuffix(*db, ".db") {
			*db = "<redacted: may hold credentials>"
		}
	}
	if len(c.Inbound.Sources) > 0 {
		srcs := slices.Clone(c.Inbound.Sources)
		for i := range srcs {
			srcs[i].Secrets = []string{"<redacted>"}
		}
		c.Inbound.Sources = srcs
	}
	return c
}

// applyRuntime sets the GC percentage and memory limit from the config.
func applyRuntime(r RuntimeConfig, log zerolog.Logger) {
	if r.GCPercent > 0 {
		debug.SetGCPercent(r.GCPercent)
		log.Info().Int("gc_percent", r.GCPercent).Msg("runtime: GC target set")
	}
	if r.MemoryLimit > 0 {
		debug.SetMemoryLimit(r.MemoryLimit)
		log.Info().Int64("memory_limit", r.MemoryLimit).Msg("runtime: soft memory limit set")
	}
}
