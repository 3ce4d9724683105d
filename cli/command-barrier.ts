import { Command, Option } from 'commander';
import { addEtcdOptions, connectEtcd, CommandFailure, type EtcdFlags } from './common';
import { intIn, parseCoordinationName, parsePositiveDuration, parseTtl } from './parse';
import { SignalRelay } from './signal-relay';
import { componentLogger } from '../core/logger';
import { BarrierTimeoutError, DoubleBarrier, TooManyParticipantsError } from '../coordination/barrier';

interface BarrierFlags extends EtcdFlags {
  count: number;
  timeout?: number;
  ttl: number;
}

export function barrierCommand(): Command {
  const cmd = new Command('barrier')
    .summary('wait until COUNT participants have entered')
    .description('enter barrier NAME and return once COUNT participants have entered (Go recipes.DoubleBarrier layout); exit 1 on --timeout')
    .argument('<name>', 'barrier name (keys NAME/waiters/..., NAME/ready)', parseCoordinationName)
    .addOption(new Option('--count <n>', 'participants to wait for').argParser(intIn(1, 1_000_000)).makeOptionMandatory())
    .addOption(new Option('--timeout <duration>', 'give up after this long: exit 1, and stop counting as a participant').argParser(parsePositiveDuration))
    .addOption(new Option('--ttl <seconds>', 'lease TTL: how long a participant that died keeps counting').default(10).argParser(parseTtl))
    .addHelpText('after', '\nExample (on each of 3 machines):\n  mesh barrier deploy-v2 --count 3 --timeout 5m && ./switch-traffic.sh');
  addEtcdOptions(cmd);
  return cmd.action(async (name: string, flags: BarrierFlags) => {
    const log = componentLogger('cli', { command: 'barrier', barrier: name });
    const etcd = await connectEtcd(flags);
    const signals = new SignalRelay(log);
    const barrier = new DoubleBarrier(etcd, { name, count: flags.count, ttlSeconds: flags.ttl, log: componentLogger('barrier', { barrier: name, count: flags.count }) });
    try {
      await barrier.enter({ timeoutMs: flags.timeout, signal: signals.abortSignal });
    } catch (err) {
      if (err instanceof BarrierTimeoutError || err instanceof TooManyParticipantsError) throw new CommandFailure(err.message, 1);
      if (signals.received) throw new CommandFailure(`barrier ${name}: interrupted by ${signals.received} before ${flags.count} participants entered`, 1);
      throw err;
    } finally {
      signals.dispose();
      // We only enter: our participant key goes now (the others already
      // counted it), and the lease with it.
      await barrier.close();
      etcd.close();
    }
    process.stdout.write(`barrier ${name}: ${flags.count} participants entered\n`);
  });
}
