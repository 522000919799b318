// Stands in for node:fs in the page (see index.html): npy.js's readNpy/writeNpy use it, the page
// only calls parseNpy on fetched bytes.
const none = () => {
  throw new Error('node:fs is not available in the browser page: fetch the file and use parseNpy');
};
export const readFileSync = none;
export const writeFileSync = none;
