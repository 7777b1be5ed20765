/** The hostile member (test/security/hostile.py, which shares no code with zivm), driven from a test. */
import fs from 'node:fs';
import path from 'node:path';
import { Json, Proc } from '../../tools/kit/proc';

const HOSTILE = path.resolve(__dirname, '..', '..', '..', 'test', 'security', 'hostile.py');

export class Hostile {
  readonly proc: Proc;
  /**
   * Attaches to `socket` as a guest's QEMU does; with `hello`, says HELLO
   * first as a host process does (a process of our own user gone wrong);
   * `broker:UID:ADDR:PORT` dials as a process of another user (hostile.py).
   * `uid`: run as that user (the program is handed over as text: the
   * checkout may be private to us).
   */
  constructor(socket: string, opts: { uid?: number; hello?: boolean } = {}) {
    const args = ['-c', fs.readFileSync(HOSTILE, 'utf8'), socket, ...(opts.hello ? ['--hello'] : [])];
    this.proc = new Proc('python3', args, { name: 'hostile.py', timeoutMs: 10000, uid: opts.uid, gid: opts.uid, cwd: '/' });
  }

  async joined(): Promise<Json> {
    return this.proc.event('joined');
  }

  /** Runs one command; its answer must be ok. */
  async do(cmd: Json): Promise<Json> {
    this.proc.send(cmd);
    const answer = await this.proc.next((line) => 'ok' in line);
    if (!answer.ok) throw new Error(`hostile ${cmd.op}: ${answer.error}`);
    return answer;
  }
}
