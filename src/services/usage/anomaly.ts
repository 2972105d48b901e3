// The usage anomaly detector: does a tenant's daily total of one metric jump far above its own
// recent level? Pure and synchronous; the caller reads the daily totals and records the alert.
//
// The contract (tenantd.v1.UsageAlert): the baseline is the median of the previous 28 days, the
// score is the distance from the baseline in robust standard deviations (the median absolute
// deviation scaled by 1.4826, the normal-consistency constant), and alerts are raised from a score
// of 4. A robust score alone misfires in practice, so a day alerts only when every gate holds:
//
// 1. History: at least `minHistoryDays` days (a new tenant has no baseline yet). The caller starts
//    the history at the tenant's first day with usage, so earlier days never count as zeros.
// 2. Score ≥ `minScore`, with the robust sigma floored at max(1.4826·MAD, 10 % of the baseline,
//    √baseline, 1): the MAD is 0 on perfectly steady traffic, and on weekly traffic where most
//    days are equal, which would make any wiggle infinitely abnormal; 10 % is ordinary day-to-day
//    variation, √baseline the counting noise of a Poisson process, and 1 keeps a zero baseline
//    finite.
// 3. Observed ≥ `minObserved`: a handful of calls is never worth an alert, whatever the ratio.
// 4. Observed ≥ `minRatio` × baseline: the effect must be large, not only unlikely; this keeps
//    growth, month-end bumps and noisy-but-regular tenants quiet.
// 5. Observed ≥ `minRatio` × the median of the same weekday in the window (the days 7, 14, 21
//    and 28 days before): a tenant's usual weekly peak (busy weekends, say) is not an anomaly.
// 6. Observed ≥ 2 × the largest day of the window: a day must at least double anything the
//    tenant did in the last four weeks. This silences intermittent usage (a batch job on random
//    days, where the median is 0), the tail of noisy traffic, and smooth growth (yesterday is
//    then the window's peak, and traffic does not double overnight). A sustained jump (a leaked
//    key that keeps running) alerts on its first day, and again only if it doubles its own peak.
//
// Every gate is non-decreasing in `observed`, so on a day still in progress (whose total only
// grows) the verdict can only go from "no" to "yes": an alert raised on a partial day is final,
// and a partial day below the usual level never alerts.

export interface AnomalyThresholds {
  /** Days of history the baseline is taken over (the contract's 28). */
  windowDays: number;
  /** Lowest score (robust standard deviations above the baseline) that alerts (the contract's 4). */
  minScore: number;
  /** Lowest observed daily quantity that alerts. */
  minObserved: number;
  /** Lowest ratio of observed to the baseline (and to the same weekday's median) that alerts. */
  minRatio: number;
  /** Fewest days of history under which nothing alerts. */
  minHistoryDays: number;
}

export const DEFAULT_ANOMALY_THRESHOLDS: AnomalyThresholds = Object.freeze({
  windowDays: 28,
  minScore: 4,
  minObserved: 100,
  minRatio: 3,
  minHistoryDays: 7,
});

export interface AnomalyVerdict {
  /** True when the day should raise an alert. */
  anomalous: boolean;
  /** Median of the history's last `windowDays` days (0 without history). */
  baseline: number;
  /** (observed − baseline) / robust sigma; negative below the baseline. */
  score: number;
  /** Short human reason: the gate that held the alert back, or why it fired. */
  reason: string;
}

/** The robust sigma is never below this fraction of the baseline. */
const SIGMA_FLOOR_FRACTION = 0.1;
/** Consistency constant: 1.4826 · MAD estimates the standard deviation of normal data. */
const MAD_SCALE = 1.4826;
/** A day must reach this multiple of the window's largest day. */
const PEAK_FACTOR = 2;

/**
 * Assesses one day of one metric against the tenant's own recent days.
 *
 * @param history the daily totals of the days before the observed day, oldest first, one entry
 *   per day (0 for a day without usage; the caller passes at most windowDays entries, starting at
 *   the tenant's first day with usage). Longer histories are cut to their last `windowDays` days.
 * @param observed the day's total so far (the day may still be in progress).
 * @throws RangeError when a quantity is negative or not finite, or the thresholds are unusable.
 */
export function assessDay(
  history: readonly number[],
  observed: number,
  thresholds: AnomalyThresholds = DEFAULT_ANOMALY_THRESHOLDS,
): AnomalyVerdict {
  checkThresholds(thresholds);
  checkQuantity(observed, "observed");
  for (const v of history) checkQuantity(v, "history");
  const window = history.slice(Math.max(0, history.length - thresholds.windowDays));

  const baseline = window.length > 0 ? median(window) : 0;
  const mad = window.length > 0 ? median(window.map((v) => Math.abs(v - baseline))) : 0;
  const sigma = Math.max(MAD_SCALE * mad, SIGMA_FLOOR_FRACTION * baseline, Math.sqrt(baseline), 1);
  const score = (observed - baseline) / sigma;
  const verdict = (anomalous: boolean, reason: string): AnomalyVerdict => ({ anomalous, baseline, score, reason });

  if (window.length < thresholds.minHistoryDays) {
    return verdict(false, `too little history (${window.length} of ${thresholds.minHistoryDays} days)`);
  }
  if (observed <= baseline) return verdict(false, `not above the baseline ${fmt(baseline)}`);
  if (score < thresholds.minScore) return verdict(false, `score ${fmt(score)} < ${fmt(thresholds.minScore)}`);
  if (observed < thresholds.minObserved) {
    return verdict(false, `observed ${fmt(observed)} < minimum ${fmt(thresholds.minObserved)}`);
  }
  if (observed < thresholds.minRatio * baseline) {
    return verdict(false, `${fmt(observed / baseline)}× the baseline < ${fmt(thresholds.minRatio)}×`);
  }
  const sameWeekday: number[] = [];
  for (let i = window.length - 7; i >= 0; i -= 7) sameWeekday.push(window[i]!);
  if (sameWeekday.length > 0) {
    const weekly = median(sameWeekday);
    if (observed < thresholds.minRatio * weekly) {
      return verdict(false, `weekly pattern: ${fmt(observed / weekly)}× the same weekday's median ${fmt(weekly)}`);
    }
  }
  const peak = Math.max(...window);
  if (observed < PEAK_FACTOR * peak) {
    return verdict(false, `below ${PEAK_FACTOR}× the window's peak ${fmt(peak)}`);
  }
  return verdict(true, `score ${fmt(score)} ≥ ${fmt(thresholds.minScore)}`);
}

/** Median of a non-empty list (the mean of the two middle values for an even length). */
function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function fmt(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function checkQuantity(v: number, what: string): void {
  if (!Number.isFinite(v) || v < 0) throw new RangeError(`${what}: quantities must be finite and ≥ 0, got ${v}`);
}

function checkThresholds(t: AnomalyThresholds): void {
  const ok =
    Number.isInteger(t.windowDays) &&
    t.windowDays >= 1 &&
    Number.isInteger(t.minHistoryDays) &&
    t.minHistoryDays >= 0 &&
    t.minHistoryDays <= t.windowDays &&
    Number.isFinite(t.minScore) &&
    Number.isFinite(t.minObserved) &&
    Number.isFinite(t.minRatio) &&
    t.minRatio >= 1;
  if (!ok) throw new RangeError(`unusable anomaly thresholds: ${JSON.stringify(t)}`);
}
