// Every import profile this build knows. Adding one: a module next to products.ts and a line here.
import type { ImportProfile } from '../profile.js';
import { productsProfile } from './products.js';

const PROFILES: ReadonlyMap<string, ImportProfile> = new Map([productsProfile].map((profile) => [profile.name, profile]));

export function findProfile(name: string): ImportProfile | undefined {
  return PROFILES.get(name);
}

export function profileNames(): string[] {
  return [...PROFILES.keys()].sort();
}
