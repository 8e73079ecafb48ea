/**
 * Unit tests of the DOM-free modules (protocol, connection, model) in plain
 * node: a stray `document`/`window` in them fails here, not just in review.
 */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/src'],
  testMatch: ['**/__tests__/**/*.spec.ts'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: { module: 'commonjs', target: 'ES2020', strict: true, esModuleInterop: true, types: ['jest', 'node'], lib: ['ES2020', 'DOM'] } }]
  },
  testTimeout: 10000
};
