/** The preload harness itself: the apps are found, and NODE_OPTIONS is appended to, never replaced. */
import { expect } from 'chai';
import fs from 'node:fs';
import { APPS, REGISTER, envFor } from './harness';

describe('preload: harness', () => {
  it('finds the apps and the compiled hook', () => {
    expect(fs.existsSync(APPS), APPS).to.equal(true);
    expect(fs.existsSync(REGISTER), REGISTER).to.equal(true);
  });

  it('appends the hook to an existing NODE_OPTIONS', () => {
    const saved = process.env.NODE_OPTIONS;
    try {
      process.env.NODE_OPTIONS = '--max-old-space-size=512';
      const res = envFor('require');
      expect(res.NODE_OPTIONS).to.equal(`--max-old-space-size=512 --require ${JSON.stringify(REGISTER)}`);
      expect(res.ZIVM).to.equal(undefined);
      expect(envFor('import').NODE_OPTIONS).to.match(/^--max-old-space-size=512 --import "file:\/\/\/.*register\.js"$/);
      expect(envFor('off')).to.include({ ZIVM: 'off' });
      expect(envFor('plain').NODE_OPTIONS).to.equal('--max-old-space-size=512');
      delete process.env.NODE_OPTIONS;
      expect(envFor('plain').NODE_OPTIONS).to.equal(undefined);
    } finally {
      if (saved === undefined) delete process.env.NODE_OPTIONS;
      else process.env.NODE_OPTIONS = saved;
    }
  });
});
