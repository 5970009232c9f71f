// The circuit breaker of a client: a state machine without I/O or timers.
//
// It counts, per RPC attempt, unavailability answers (UNAVAILABLE and
// DEADLINE_EXCEEDED) as failures, any other answer of the server as a
// success (the server is alive, even when it refuses), and a call the caller
// canceled as neither. It opens after failureThreshold consecutive failures,
// or when over the last windowMs at least minCalls attempts were made and the
// failure ratio reached failureRatio. Open, it refuses guarded calls for
// openForMs; then it lets one probe through (half-open), whose success
// closes it and whose failure opens it again. Time comes from injectable
// clocks, so that the tests drive it with a fake one; an open breaker turns
// half-open when it is next asked, not on a timer.

import { CircuitOpenError } from "./errors.js";

/** The states of a {@link CircuitBreaker}. */
export type BreakerState = "closed" | "open" | "half_open";

/** Called on every transition of a breaker, with the last unavailability error it counted. */
export type BreakerListener = (from: BreakerState, to: BreakerState, lastError: unknown) => void;

/** The parameters of the circuit breaker (`breaker` of {@link ClientOptions}); every field is optional. */
export interface BreakerOptions {
  /** Consecutive failed attempts that open the breaker (default 5). */
  failureThreshold?: number;
  /** The failure ratio over windowMs that opens it, in (0, 1] (default 0.5), once minCalls attempts were made. */
  failureRatio?: number;
  /** The length of that window, in ms (default 10000). */
  windowMs?: number;
  /** The attempts the window needs before its ratio counts (default 20). */
  minCalls?: number;
  /** How long the breaker stays open before it lets a probe through, in ms (default 5000). */
  openForMs?: number;
}

/** The defaults of {@link BreakerOptions}. */
export const breakerDefaults: Readonly<Required<BreakerOptions>> = Object.freeze({
  failureThreshold: 5,
  failureRatio: 0.5,
  windowMs: 10_000,
  minCalls: 20,
  openForMs: 5_000,
});

/** What one attempt tells the breaker. */
export type AttemptOutcome = "success" | "failure" | "ignored";

/** The permission {@link CircuitBreaker.allow} gives an attempt; hand it back to {@link CircuitBreaker.record}. */
export interface Ticket {
  /** Whether this attempt is the half-open probe that decides the state. */
  readonly probe: boolean;
  /**
   * The generation of the breaker's state when the ticket was given: an
   * outcome from an older state (an attempt that began before the breaker
   * opened) does not count in the newer one.
   */
  readonly generation: number;
}

/** The clocks of a breaker: monotonic ms for durations, and the wall clock that errors show. */
export interface Clock {
  /** Monotonic milliseconds. */
  now(): number;
  /** The wall clock. */
  date(): Date;
}

const systemClock: Clock = { now: () => performance.now(), date: () => new Date() };

/** Checks the breaker's parameters, naming the field and the limit of a bad one. */
export function breakerConfig(options: BreakerOptions): Required<BreakerOptions> {
  const c = { ...breakerDefaults, ...stripUndefined(options) };
  positive(c.failureThreshold, "breaker.failureThreshold", true);
  positive(c.failureRatio, "breaker.failureRatio");
  if (c.failureRatio > 1) {
    throw new RangeError(`ledgerd client: breaker.failureRatio must be at most 1, got ${c.failureRatio}`);
  }
  positive(c.windowMs, "breaker.windowMs");
  positive(c.minCalls, "breaker.minCalls", true);
  positive(c.openForMs, "breaker.openForMs");
  return c;
}

/**
 * The circuit breaker of one client (see the top of this file). Use
 * {@link allow} before each attempt of a guarded call (it throws a
 * {@link CircuitOpenError} when the attempt may not be made), and
 * {@link record} after every attempt, guarded or not.
 */
export class CircuitBreaker {
  readonly config: Required<BreakerOptions>;
  readonly #onChange: BreakerListener | undefined;
  readonly #clock: Clock;
  #state: BreakerState = "closed";
  #generation = 0;
  #consecutive = 0;
  #window: { at: number; failed: boolean }[] = [];
  #windowFailures = 0;
  #openedAt = 0;
  #since: Date | undefined;
  #lastError: unknown;
  #probeOut = false;
  #opens = 0;

  /** Makes a closed breaker; onChange is called on every transition (an exception it throws is swallowed). */
  constructor(options: BreakerOptions = {}, onChange?: BreakerListener, clock: Clock = systemClock) {
    this.config = breakerConfig(options);
    this.#onChange = onChange;
    this.#clock = clock;
  }

  /** `"closed"`, `"open"` or `"half_open"`; an open breaker whose openForMs has passed reads (and becomes) half-open. */
  get state(): BreakerState {
    this.#tick();
    return this.#state;
  }

  /** How many times the breaker opened (re-openings after a failed probe included). */
  get opens(): number {
    return this.#opens;
  }

  /** The last unavailability error counted, if any. */
  get lastError(): unknown {
    return this.#lastError;
  }

  /**
   * Lets an attempt through and returns its ticket. A guarded attempt is
   * refused with a {@link CircuitOpenError} while the breaker is open, or
   * half-open with its probe out; an unguarded one always passes.
   */
  allow(guarded: boolean): Ticket {
    this.#tick();
    if (!guarded || this.#state === "closed") {
      return { probe: false, generation: this.#generation };
    }
    if (this.#state === "half_open" && !this.#probeOut) {
      this.#probeOut = true;
      return { probe: true, generation: this.#generation };
    }
    throw this.#openError();
  }

  /**
   * The error {@link allow} would throw for a guarded attempt now, or
   * undefined; unlike allow it claims nothing (a retry asks it before it
   * spends a token on an attempt the breaker would refuse).
   */
  refusal(): CircuitOpenError | undefined {
    this.#tick();
    const refused = this.#state === "open" || (this.#state === "half_open" && this.#probeOut);
    return refused ? this.#openError() : undefined;
  }

  /**
   * Counts the outcome of an attempt; error is the attempt's error, kept as
   * the last error of a failure. The probe's outcome decides a half-open
   * breaker; other outcomes count only while it is closed, and only if it
   * has not changed state since the ticket was given.
   */
  record(ticket: Ticket, outcome: AttemptOutcome, error?: unknown): void {
    if (outcome === "failure" && error !== undefined) {
      this.#lastError = error;
    }
    this.#tick();
    if (ticket.generation !== this.#generation) {
      return;
    }
    if (ticket.probe) {
      if (this.#state === "half_open" && outcome !== "ignored") {
        if (outcome === "success") {
          this.#move("closed");
        } else {
          this.#open();
        }
      } else if (this.#state === "half_open") {
        this.#probeOut = false; // the probe was canceled: let another one through
      }
      return;
    }
    if (outcome === "ignored" || this.#state !== "closed") {
      return;
    }
    const now = this.#clock.now();
    const failed = outcome === "failure";
    this.#consecutive = failed ? this.#consecutive + 1 : 0;
    this.#window.push({ at: now, failed });
    if (failed) {
      this.#windowFailures++;
    }
    while (this.#window.length > 0 && this.#window[0]!.at <= now - this.config.windowMs) {
      if (this.#window.shift()!.failed) {
        this.#windowFailures--;
      }
    }
    const calls = this.#window.length;
    if (
      this.#consecutive >= this.config.failureThreshold ||
      (calls >= this.config.minCalls && this.#windowFailures >= this.config.failureRatio * calls)
    ) {
      this.#open();
    }
  }

  #tick(): void {
    if (this.#state === "open" && this.#clock.now() >= this.#openedAt + this.config.openForMs) {
      this.#move("half_open");
    }
  }

  #open(): void {
    this.#openedAt = this.#clock.now();
    this.#since = this.#clock.date();
    this.#opens++;
    this.#move("open");
  }

  #move(to: BreakerState): void {
    const from = this.#state;
    this.#state = to;
    this.#generation++;
    this.#probeOut = false;
    this.#consecutive = 0;
    this.#window = [];
    this.#windowFailures = 0;
    if (this.#onChange) {
      try {
        this.#onChange(from, to, this.#lastError);
      } catch {
        // A metrics hook must not break calls.
      }
    }
  }

  #openError(): CircuitOpenError {
    return new CircuitOpenError({
      since: this.#since ?? this.#clock.date(),
      ageMs: Math.max(0, this.#clock.now() - this.#openedAt),
      lastError: this.#lastError,
    });
  }
}

/** The parameters of the retry budget (`retryBudget` of {@link ClientOptions}). */
export interface RetryBudgetOptions {
  /** The bucket's size and initial content (default 100). */
  maxTokens?: number;
  /** The tokens each first attempt of a call adds (default 0.1; 0: the bucket never refills). */
  ratio?: number;
}

/** The defaults of {@link RetryBudgetOptions}. */
export const retryBudgetDefaults: Readonly<Required<RetryBudgetOptions>> = Object.freeze({ maxTokens: 100, ratio: 0.1 });

/**
 * gRPC's retry throttling: a token bucket shared by all of a client's calls.
 * It starts full; every first attempt adds `ratio` tokens (capped at
 * maxTokens), every retry spends one and is made only if a whole token is
 * there, so retries never exceed maxTokens + ratio × calls.
 */
export class RetryBudget {
  readonly config: Required<RetryBudgetOptions>;
  #tokens: number;

  /** Makes a full bucket; throws a RangeError naming a bad parameter. */
  constructor(options: RetryBudgetOptions = {}) {
    this.config = { ...retryBudgetDefaults, ...stripUndefined(options) };
    positive(this.config.maxTokens, "retryBudget.maxTokens");
    if (!(typeof this.config.ratio === "number" && this.config.ratio >= 0)) {
      throw new RangeError(`ledgerd client: retryBudget.ratio must be a number ≥ 0, got ${this.config.ratio}`);
    }
    this.#tokens = this.config.maxTokens;
  }

  /** The tokens in the bucket now. */
  get tokens(): number {
    return this.#tokens;
  }

  /** Counts the first attempt of a call. */
  onCall(): void {
    this.#tokens = Math.min(this.config.maxTokens, this.#tokens + this.config.ratio);
  }

  /** Spends a token for a retry and returns true, or returns false when less than a whole one is left. */
  tryRetry(): boolean {
    if (this.#tokens < 1) {
      return false;
    }
    this.#tokens -= 1;
    return true;
  }
}

function positive(value: unknown, name: string, integer = false): void {
  if (typeof value !== "number" || !(value > 0) || !Number.isFinite(value) || (integer && !Number.isInteger(value))) {
    throw new RangeError(`ledgerd client: ${name} must be a positive ${integer ? "integer" : "number"}, got ${String(value)}`);
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
